# router/local.c answering OpenAI tool calls with the local engine (lazy constrained decoding):
# stories260K, a mkmodel'd tiny qwen2 (Hermes format) and tiny llama (Llama 3 format).
wye_test(test_router_local_tools test_local_tools.c wye_router_testutil)
