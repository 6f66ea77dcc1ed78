# The tensor kernels (block layouts, reference vs AVX2, matmul) and the compute pool.
wye_test(test_engine_kernels test_kernels.c wye_engine)
wye_test(test_engine_pool test_pool.c wye_engine)
# The same kernel tests with the scalar path forced, as on a CPU without AVX2.
add_test(NAME test_engine_kernels_scalar COMMAND test_engine_kernels)
set_tests_properties(test_engine_kernels_scalar PROPERTIES TIMEOUT 300 ENVIRONMENT
                     "CMOCKA_MESSAGE_OUTPUT=STDOUT;WYE_SHARED_DIR=${WYE_SHARED};WYE_NO_AVX2=1")
