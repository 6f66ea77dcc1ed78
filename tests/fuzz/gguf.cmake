# The GGUF loader (and the writer's copy of what it loaded) under libFuzzer.
#   ninja -C build-fuzz fuzz_gguf gguf_seeds
#   build-fuzz/tests/fuzz/gguf_seeds /tmp/gguf-corpus
#   build-fuzz/tests/fuzz/fuzz_gguf -max_total_time=20 /tmp/gguf-corpus
set(_gguf_srcs ${PROJECT_SOURCE_DIR}/local-engine/gguf.c
               ${PROJECT_SOURCE_DIR}/local-engine/gguf_write.c
               ${PROJECT_SOURCE_DIR}/local-engine/types.c)
wye_fuzz(fuzz_gguf ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_gguf.c ${_gguf_srcs})

# Writes the seed corpus (a valid file, the malformed test cases, a vocab-like file).
add_executable(gguf_seeds ${CMAKE_CURRENT_SOURCE_DIR}/gguf_seeds.c ${_gguf_srcs}
               ${PROJECT_SOURCE_DIR}/tests/local-engine/test_gguf_util.c)
target_link_libraries(gguf_seeds PRIVATE wye_common)
