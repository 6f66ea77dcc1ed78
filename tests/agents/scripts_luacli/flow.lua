-- Used by test_lua_cli.c: the only declaration is a workflow, so it runs without --workflow.
workflow("double", function(ctx, input)
  ctx:emit {type = "progress", step = "doubling"}
  return {n = input.n * 2, run_by = ctx.agent}
end)
