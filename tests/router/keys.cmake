# router/keys.c: authentication, rate limits, budgets, spend restored from the ledger, and
# `wye keys new` run through the built binary.
if(TARGET wye AND TARGET wye_conf)
  wye_test(test_keys test_keys.c wye_router wye_conf wye_common)
  add_dependencies(test_keys wye)
endif()
