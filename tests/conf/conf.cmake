wye_test(test_conf test_conf.c wye_conf)
