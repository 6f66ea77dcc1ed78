# The decode (gemv) and prompt (gemm) kernels of the Q8_0-activation types against the
# scalar reference.
wye_test(test_engine_kernels_gemv test_kernels_gemv.c wye_engine)
