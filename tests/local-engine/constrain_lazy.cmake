# Lazily triggered constraints (tool calls answered by the local engine): the tagged union of
# tool-call objects and generation with a trigger on stories260K, a random tiny qwen2 and a
# random tiny llama (Llama 3 vocabulary), both written at test time.
wye_test(test_constrain_lazy test_constrain_lazy.c wye_constrain_test_util wye_engine)
