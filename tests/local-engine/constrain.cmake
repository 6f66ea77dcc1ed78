# Constrained decoding (owner: constrain): the JSON-Schema matcher and vocabulary mask, and
# generation under a schema on stories260K and a random-weight tiny qwen2 model.
wye_test(test_constrain test_constrain.c wye_engine)
wye_test(test_constrain_gen test_constrain_gen.c wye_model_test_util wye_engine)
