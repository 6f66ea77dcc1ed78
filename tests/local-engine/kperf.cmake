# The decode (gemv) and prompt (gemm) kernels of the Q8_0-activation types against the
# scalar reference.
wye_test(test_engine_kernels_gemv test_kernels_gemv.c wye_engine)
# The same with the scalar path forced (no gemv/gemm/gemm8: the batch invariance and the
# fallbacks of the row loops still hold).
add_test(NAME test_engine_kernels_gemv_scalar COMMAND test_engine_kernels_gemv)
set_tests_properties(test_engine_kernels_gemv_scalar PROPERTIES TIMEOUT 300 ENVIRONMENT
                     "CMOCKA_MESSAGE_OUTPUT=STDOUT;WYE_SHARED_DIR=${WYE_SHARED};WYE_NO_AVX2=1")
