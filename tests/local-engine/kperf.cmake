# The decode (gemv) and prompt (gemm) kernels of the Q8_0-activation types against the
# scalar reference.
wye_test(test_engine_kernels_gemv test_kernels_gemv.c wye_engine)
# The same with the scalar path forced (no gemv/gemm/gemm8: the batch invariance and the
# fallbacks of the row loops still hold).
add_test(NAME test_engine_kernels_gemv_scalar COMMAND test_engine_kernels_gemv)
set_tests_properties(test_engine_kernels_gemv_scalar PROPERTIES TIMEOUT 300 ENVIRONMENT
                     "CMOCKA_MESSAGE_OUTPUT=STDOUT;WYE_SHARED_DIR=${WYE_SHARED};WYE_NO_AVX2=1")
# Q4_0 repacked in groups of 8 rows: the layout, both kernels against the Q4_0 dot, the rows
# entry point; again with the scalar path active.
wye_test(test_engine_kernels_r8 test_kernels_r8.c wye_engine)
add_test(NAME test_engine_kernels_r8_scalar COMMAND test_engine_kernels_r8)
set_tests_properties(test_engine_kernels_r8_scalar PROPERTIES TIMEOUT 300 ENVIRONMENT
                     "CMOCKA_MESSAGE_OUTPUT=STDOUT;WYE_NO_AVX2=1")
