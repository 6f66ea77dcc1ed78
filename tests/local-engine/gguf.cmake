# GGUF loader, writer and `wye info`: the tests link the engine plus a small helper library
# that builds valid and malformed files.
add_library(wye_gguf_test STATIC ${CMAKE_CURRENT_SOURCE_DIR}/test_gguf_util.c)
target_link_libraries(wye_gguf_test PUBLIC wye_engine wye_common)

wye_test(test_gguf test_gguf.c wye_gguf_test)
wye_test(test_gguf_bad test_gguf_bad.c wye_gguf_test)
wye_test(test_gguf_info test_gguf_info.c wye_gguf_test)
