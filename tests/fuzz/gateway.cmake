# The parsers that read untrusted bytes on the gateway/remote side, under libFuzzer:
#   fuzz_sse          router/sse.c: the upstream's event stream, chunk/completion/error JSON
#   fuzz_chat_req     common/chat.c: a chat request body
#   fuzz_gw_body      gw_format.c's nesting guard, cJSON and chat.c as the HTTP and WebSocket
#                     handlers run them on a request
#   fuzz_gw_format    an upstream stream through sse.c into a gateway stream (gw_stream.c,
#                     gw_format.c): what the client receives must be well-formed
#   fuzz_ledger_line  router/ledger_format.c: a ledger line, a time, reasons, a record
# The code under test is compiled into each target (instrumented); the rest comes from
# wye_common. The gateway targets take gw_server.c's two stream hooks from fuzz_gw_stubs.c
# instead of the server, so they link without the router and the engine.
# tests/fuzz/run_gateway_fuzz.sh builds, seeds and runs them all:
#   ninja -C build-fuzz gateway_fuzz
#   build-fuzz/tests/fuzz/gateway_seeds /tmp/gw-corpus   (one folder per target)
#   build-fuzz/tests/fuzz/fuzz_sse -max_total_time=20 -dict=/tmp/gw-corpus/gateway.dict \
#       /tmp/gw-corpus/sse
set(_gw_fuzz_common ${PROJECT_SOURCE_DIR}/common/alloc.c ${PROJECT_SOURCE_DIR}/common/buf.c)
set(_gw_fuzz_stream ${PROJECT_SOURCE_DIR}/gateway/gw_format.c
                    ${PROJECT_SOURCE_DIR}/gateway/gw_stream.c
                    ${PROJECT_SOURCE_DIR}/gateway/gw_metrics.c
                    ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_gw_stubs.c)

wye_fuzz(fuzz_sse ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_sse.c ${PROJECT_SOURCE_DIR}/router/sse.c
         ${_gw_fuzz_common})

wye_fuzz(fuzz_chat_req ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_chat_req.c
         ${PROJECT_SOURCE_DIR}/common/chat.c ${_gw_fuzz_common})

wye_fuzz(fuzz_gw_body ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_gw_body.c ${_gw_fuzz_stream}
         ${PROJECT_SOURCE_DIR}/common/chat.c ${_gw_fuzz_common})
target_link_libraries(fuzz_gw_body PRIVATE PkgConfig::LWS)

wye_fuzz(fuzz_gw_format ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_gw_format.c ${_gw_fuzz_stream}
         ${PROJECT_SOURCE_DIR}/router/sse.c ${_gw_fuzz_common})
target_link_libraries(fuzz_gw_format PRIVATE PkgConfig::LWS)

wye_fuzz(fuzz_ledger_line ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_ledger_line.c
         ${PROJECT_SOURCE_DIR}/router/ledger_format.c ${PROJECT_SOURCE_DIR}/common/crypto.c
         ${PROJECT_SOURCE_DIR}/common/clock.c ${_gw_fuzz_common})

# Writes each target's seed corpus (upstream streams, requests, a signed ledger line) and a
# dictionary of JSON, SSE and ledger tokens for all of them (DIR/gateway.dict).
add_executable(gateway_seeds ${CMAKE_CURRENT_SOURCE_DIR}/gateway_seeds.c)
target_link_libraries(gateway_seeds PRIVATE wye_common)

# Undefined behaviour stops the run (wye_fuzz reports it and goes on).
foreach(_t fuzz_sse fuzz_chat_req fuzz_gw_body fuzz_gw_format fuzz_ledger_line)
  target_compile_options(${_t} PRIVATE -fno-sanitize-recover=undefined)
endforeach()

add_custom_target(gateway_fuzz)
add_dependencies(gateway_fuzz fuzz_sse fuzz_chat_req fuzz_gw_body fuzz_gw_format fuzz_ledger_line
                 gateway_seeds)
