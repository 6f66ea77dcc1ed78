# Tokenizers, streaming detokenizer and chat templates, tested against the engine library.
add_library(wye_tok_test STATIC ${CMAKE_CURRENT_LIST_DIR}/test_tok_util.c)
target_link_libraries(wye_tok_test PUBLIC wye_engine wye_common ${CMOCKA_LIB})
target_compile_definitions(wye_tok_test PRIVATE WYE_SHARED_DIR="${WYE_SHARED}")

wye_test(test_tokenizer test_tokenizer.c wye_tok_test)
wye_test(test_tokenizer_vocab test_tokenizer_vocab.c wye_tok_test)
wye_test(test_tokenizer_detok test_tokenizer_detok.c wye_tok_test)
# Against tiktoken's ids for 400 random strings (the corpus and its generator: tiktoken/).
wye_test(test_tokenizer_tiktoken test_tokenizer_tiktoken.c wye_tok_test PkgConfig::CJSON)
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
