# Gateway tests: a real server on 127.0.0.1 port 0 driven by raw-socket HTTP and WebSocket
# clients, with a scripted backend (gw_test_backend.c).
add_library(wye_gw_testutil STATIC ${CMAKE_CURRENT_LIST_DIR}/gw_test_backend.c
            ${CMAKE_CURRENT_LIST_DIR}/http_client.c ${CMAKE_CURRENT_LIST_DIR}/ws_client.c
            ${CMAKE_CURRENT_LIST_DIR}/gw_json.c ${CMAKE_CURRENT_LIST_DIR}/serve_child.c)
target_link_libraries(wye_gw_testutil PUBLIC wye_gateway wye_common Threads::Threads)
target_compile_definitions(wye_gw_testutil PRIVATE WYE_BINARY_DIR="${PROJECT_BINARY_DIR}")
wye_test(test_gateway_stream test_gateway_stream.c wye_gw_testutil wye_gateway wye_common)
wye_test(test_gateway_http test_gateway_http.c wye_gw_testutil wye_gateway wye_common)
set_tests_properties(test_gateway_http PROPERTIES TIMEOUT 120)
wye_test(test_gateway_ws test_gateway_ws.c wye_gw_testutil wye_gateway wye_common)
set_tests_properties(test_gateway_ws PROPERTIES TIMEOUT 120)
# The real serving stack in process (stub upstream, router, optionally agents, server), shared
# by test_gateway_e2e, test_gateway_agents and tests/agents/test_agents_stream.
if(TARGET wye_router AND TARGET wye_conf AND TARGET wye_stub_upstream AND TARGET wye_agents)
  add_library(wye_gw_stack STATIC ${CMAKE_CURRENT_LIST_DIR}/gw_stack.c)
  target_link_libraries(wye_gw_stack PUBLIC wye_gateway wye_router wye_agents wye_conf
                        wye_stub_upstream wye_common)
endif()
# End to end over the real router and the stub upstream.
if(TARGET wye_gw_stack)
  wye_test(test_gateway_e2e test_gateway_e2e.c wye_gw_stack wye_gw_testutil wye_gateway
           wye_router wye_conf wye_stub_upstream wye_common)
  set_tests_properties(test_gateway_e2e PROPERTIES TIMEOUT 120)
endif()
# `wye serve` itself, run in a child process.
if(TARGET wye_router AND TARGET wye_conf)
  wye_test(test_gateway_serve test_gateway_serve.c wye_gw_testutil wye_gateway wye_router wye_conf
           wye_common)
  set_tests_properties(test_gateway_serve PROPERTIES TIMEOUT 120)
endif()
