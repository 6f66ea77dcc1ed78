-- Used by test_lua_cli.c: a plain script (no declarations); the CLI calls main with the
-- decoded arguments. print goes to stderr, wye.emit too (a JSON line), wye.sleep parks the run.
local M = {}

function M.main(args)
  print("scaling", args.n)
  wye.emit({type = "progress", n = args.n})
  local t0 = wye.now()
  wye.sleep(60)
  return {n = args.n * 10, slept = wye.now() - t0 >= 50}
end

return M
