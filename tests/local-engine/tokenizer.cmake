# Tokenizers, streaming detokenizer and chat templates. The tests link a small library of
# just these sources plus the GGUF loader/writer, so that they build while other parts of
# wye_engine are being written.
file(GLOB _tok_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/local-engine/tok_*.c)
add_library(wye_tok_test STATIC
  ${_tok_sources}
  ${PROJECT_SOURCE_DIR}/local-engine/tokenizer.c
  ${PROJECT_SOURCE_DIR}/local-engine/unicode.c
  ${PROJECT_SOURCE_DIR}/local-engine/unicode_tables.c
  ${PROJECT_SOURCE_DIR}/local-engine/chat_template.c
  ${PROJECT_SOURCE_DIR}/local-engine/gguf.c
  ${PROJECT_SOURCE_DIR}/local-engine/gguf_write.c
  ${PROJECT_SOURCE_DIR}/local-engine/types.c)
target_link_libraries(wye_tok_test PUBLIC wye_common)

wye_test(test_tokenizer test_tokenizer.c wye_tok_test)
wye_test(test_tokenizer_vocab test_tokenizer_vocab.c wye_tok_test)
wye_test(test_tokenizer_detok test_tokenizer_detok.c wye_tok_test)
wye_test(test_chat_template test_chat_template.c wye_tok_test)

# Development helper for tok_pretok_fuzz.py (needs the third-party `regex` module, so it is
# not a CTest): compares the hand-written pre-tokenizers with the original regexes.
add_executable(tok_pretok_dump tok_pretok_dump.c)
target_link_libraries(tok_pretok_dump PRIVATE wye_tok_test)

# Chat templates rendered by jinja2 (Debian's python3-jinja2) from the real template files and
# from each family's published template, compared byte for byte with eng_chat_format.
add_executable(chat_template_dump chat_template_dump.c)
target_link_libraries(chat_template_dump PRIVATE wye_tok_test PkgConfig::CJSON)
add_test(NAME test_chat_template_jinja
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/chat_template_jinja_test.py
                 $<TARGET_FILE:chat_template_dump> ${WYE_SHARED}/tokenizers/chat-templates)
set_tests_properties(test_chat_template_jinja PROPERTIES TIMEOUT 120)
