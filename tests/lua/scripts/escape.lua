-- Hostile: looks for every door out of the sandbox; returns the names it found open.
return function()
  local found = {}
  local names = { "io", "os", "package", "require", "debug", "dofile", "loadfile",
                  "loadstring", "module", "newproxy", "setfenv", "getfenv", "warn" }
  for _, n in ipairs(names) do
    if _ENV[n] ~= nil or _G[n] ~= nil then found[#found + 1] = n end
  end
  if string.dump then found[#found + 1] = "string.dump" end
  if math.randomseed then found[#found + 1] = "math.randomseed" end
  if ("").dump then found[#found + 1] = "(''):dump" end
  if getmetatable("") then found[#found + 1] = "string metatable" end
  if getmetatable(_ENV) then found[#found + 1] = "_ENV metatable" end
  return table.concat(found, ",")
end
