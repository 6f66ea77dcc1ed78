# Constrained decoding (owner: constrain): the JSON-Schema matcher and vocabulary mask, and
# generation under a schema on stories260K and a random-weight tiny qwen2 model.
wye_test(test_constrain test_constrain.c wye_engine)
# Helpers shared by the generation tests under a constraint (models, contexts, schemas).
add_library(wye_constrain_test_util STATIC ${CMAKE_CURRENT_LIST_DIR}/constrain_test_util.c)
target_link_libraries(wye_constrain_test_util PUBLIC wye_engine)
target_compile_definitions(wye_constrain_test_util PRIVATE WYE_SHARED_DIR="${WYE_SHARED}"
                           WYE_BINARY_DIR="${PROJECT_BINARY_DIR}")
wye_test(test_constrain_gen test_constrain_gen.c wye_constrain_test_util wye_model_test_util
         wye_engine)
