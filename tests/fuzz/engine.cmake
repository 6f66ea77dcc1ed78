# The local engine's parsers of untrusted text under libFuzzer: the tokenizers and streaming
# detokenizer (fuzz_tokenizer, on ../shared/vocab), the chat templates (fuzz_chat_template)
# and the JSON-Schema compiler with its matcher and vocabulary mask (fuzz_schema), and the
# tokenizer's loader on inconsistent vocabulary metadata (fuzz_tok_load).
#   tests/fuzz/run_engine_fuzz.sh 240        (builds, writes the seeds, runs each target)
# The parsers' part of the engine (wye_engine's sources that these targets reach) is built a
# second time here as a static library instrumented for coverage and ASan+UBSan: wye_engine
# itself is compiled without them, which would leave libFuzzer blind to the code under test.
set(_eng_fuzz_srcs chat_template.c constrain_cache.c constrain_mask.c constrain_match.c
                   constrain_schema.c gguf.c gguf_write.c tok_bpe.c tok_encode.c tok_piece.c
                   tok_pretok.c tok_spm.c tokenizer.c types.c unicode.c unicode_tables.c)
list(TRANSFORM _eng_fuzz_srcs PREPEND ${PROJECT_SOURCE_DIR}/local-engine/)
add_library(wye_engine_fuzz STATIC ${_eng_fuzz_srcs})
target_compile_options(wye_engine_fuzz PRIVATE -fsanitize=fuzzer-no-link,address,undefined
                       -fno-omit-frame-pointer)
target_link_libraries(wye_engine_fuzz PUBLIC wye_common Threads::Threads m)

get_filename_component(_eng_fuzz_vocab "${PROJECT_SOURCE_DIR}/../shared/vocab" ABSOLUTE)
foreach(_t fuzz_tokenizer fuzz_chat_template fuzz_schema fuzz_tok_load)
  wye_fuzz(${_t} ${CMAKE_CURRENT_SOURCE_DIR}/${_t}.c)
  target_link_libraries(${_t} PRIVATE wye_engine_fuzz)
endforeach()
# WYE_FUZZ_VOCAB_DIR in the environment overrides this at run time.
target_compile_definitions(fuzz_tokenizer PRIVATE WYE_FUZZ_VOCAB_DIR_DEFAULT="${_eng_fuzz_vocab}")
