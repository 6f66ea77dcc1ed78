# GGUF loader, writer and `wye info`. The tests link a small library of just these sources
# (plus types.c) so that they build while other parts of wye_engine are being written.
add_library(wye_gguf_test STATIC
  ${PROJECT_SOURCE_DIR}/local-engine/gguf.c
  ${PROJECT_SOURCE_DIR}/local-engine/gguf_write.c
  ${PROJECT_SOURCE_DIR}/local-engine/eng_info.c
  ${PROJECT_SOURCE_DIR}/local-engine/types.c
  ${CMAKE_CURRENT_SOURCE_DIR}/test_gguf_util.c)
target_link_libraries(wye_gguf_test PUBLIC wye_common)

wye_test(test_gguf test_gguf.c wye_gguf_test)
wye_test(test_gguf_bad test_gguf_bad.c wye_gguf_test)
wye_test(test_gguf_info test_gguf_info.c wye_gguf_test)
