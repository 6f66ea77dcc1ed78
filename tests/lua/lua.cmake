# Tests of the Lua sandbox (lua/).
wye_test(test_lua_sandbox test_sandbox.c wye_lua)
wye_test(test_lua_run test_run.c wye_lua)
wye_test(test_lua_json test_json.c wye_lua)
wye_test(test_lua_cli test_cli.c wye_lua)
if(TARGET wye)
  add_dependencies(test_lua_cli wye)
endif()
wye_test(test_lua_pattern test_pattern.c wye_lua PkgConfig::LUA PkgConfig::CJSON)
