# conf/: the keys, auth, prices, ledger and router sections.
wye_test(test_conf_sections test_conf_sections.c wye_conf wye_common)
