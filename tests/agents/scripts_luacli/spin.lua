-- Used by test_lua_cli.c: hostile, never returns and swallows errors with pcall.
return function()
  while true do
    pcall(function() while true do end end)
  end
end
