-- Hostile: tries to swallow the instruction/time limit with pcall and keep running.
return function()
  while true do
    pcall(function() while true do end end)
  end
end
