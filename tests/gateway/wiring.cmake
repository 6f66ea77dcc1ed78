# `wye serve` wiring, end to end (the built binary in child processes; needs the wye target):
# API key spend restored from the ledger after a restart and a crash; the default local model
# (./models/*.gguf, ../shared, the source tree's test model) seen in GET /v1/models; the triage
# workflow's local-then-remote calls and hostile agent runs while chats keep answering.
if(TARGET wye AND TARGET wye_stub_upstream AND TARGET wye_agents_test_server)
  add_library(wye_gw_wiring_util STATIC ${CMAKE_CURRENT_LIST_DIR}/test_gateway_wiring_util.c)
  target_link_libraries(wye_gw_wiring_util PUBLIC wye_gw_testutil wye_common)
  target_compile_definitions(wye_gw_wiring_util PRIVATE WYE_BINARY_DIR="${PROJECT_BINARY_DIR}")
  wye_test(test_gateway_wiring_keys test_gateway_wiring_keys.c wye_gw_wiring_util
           wye_stub_upstream wye_common)
  wye_test(test_gateway_wiring_model test_gateway_wiring_model.c wye_gw_wiring_util wye_common)
  wye_test(test_gateway_wiring_agents test_gateway_wiring_agents.c wye_gw_wiring_util
           wye_agents_test_server PkgConfig::CJSON wye_common)
  foreach(_t test_gateway_wiring_keys test_gateway_wiring_model test_gateway_wiring_agents)
    add_dependencies(${_t} wye)
    set_tests_properties(${_t} PROPERTIES TIMEOUT 180)
  endforeach()
endif()
