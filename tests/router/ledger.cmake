# The cost/latency ledger: chain, tamper detection, crash recovery, rotation, summary, CLI.
add_library(wye_ledger_testutil STATIC ${CMAKE_CURRENT_LIST_DIR}/test_ledger_util.c)
target_link_libraries(wye_ledger_testutil PUBLIC wye_router wye_common)
target_compile_definitions(wye_ledger_testutil PRIVATE WYE_BINARY_DIR="${PROJECT_BINARY_DIR}")
foreach(_t test_ledger test_ledger_crash test_ledger_summary)
  if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/${_t}.c)
    wye_test(${_t} ${_t}.c wye_ledger_testutil)
  endif()
endforeach()
# `wye ledger ...` run as a child process: needs the binary.
if(TARGET wye AND EXISTS ${CMAKE_CURRENT_LIST_DIR}/test_ledger_cli.c)
  wye_test(test_ledger_cli test_ledger_cli.c wye_ledger_testutil)
  add_dependencies(test_ledger_cli wye)
endif()
