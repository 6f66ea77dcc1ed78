# The model, forward pass, sampler and engine API (owner: model).
add_library(wye_model_test_util STATIC ${CMAKE_CURRENT_LIST_DIR}/test_model_util.c)
target_link_libraries(wye_model_test_util PUBLIC wye_engine)
target_compile_definitions(wye_model_test_util PRIVATE WYE_SHARED_DIR="${WYE_SHARED}")

wye_test(test_engine_sampler test_sampler.c wye_engine)
wye_test(test_engine_model test_model.c wye_model_test_util wye_engine)
wye_test(test_engine_api test_engine.c wye_model_test_util wye_engine)
