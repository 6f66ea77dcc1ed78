-- A triage workflow: classify the ticket on the local model, answer easy ones locally and
-- escalate hard ones to the remote model ("local" and "remote" name the configured local and
-- remote models; without a local model "local" means "auto"). The classification asks for a
-- response_format json_schema, so a local model's answer is always JSON matching it (constrained
-- decoding); an answer that is not (a remote model ignoring it) counts as category "other".
-- Input: the ticket text. Result: {category, difficulty, escalated, answer}.
-- Try: wye agent run triage "My invoice shows VAT twice and the refund API returns 409"

local CATEGORIES = {"account", "billing", "shipping", "technical", "other"}

local SCHEMA = {
  type = "object",
  properties = {
    category = {type = "string", enum = CATEGORIES},
    difficulty = {type = "string", enum = {"easy", "hard"}},
  },
  required = {"category", "difficulty"},
  additionalProperties = false,
}

local function classify(ctx, text)
  local c = ctx:chat {
    model = "local",
    max_tokens = 64,
    response_format = {type = "json_schema", json_schema = {name = "triage", schema = SCHEMA}},
    messages = {
      {role = "system", content = "Classify the support ticket. Answer in JSON with its "
        .. "category (" .. table.concat(CATEGORIES, ", ") .. ") and its difficulty: easy or hard."},
      {role = "user", content = text},
    },
  }
  local ok, v = pcall(wye.json.decode, c.text or "")
  if not ok or type(v) ~= "table" then
    v = {}
  end
  local category = "other"
  for _, name in ipairs(CATEGORIES) do
    if v.category == name then
      category = name
    end
  end
  return category, v.difficulty == "hard"
end

workflow("triage", function(ctx, input)
  local text = type(input) == "table" and (input.text or "") or tostring(input or "")
  ctx:emit {type = "triage", stage = "classify"}
  local category, hard = classify(ctx, text)
  hard = hard or #text > 400
  local r
  if hard then
    ctx:emit {type = "triage", stage = "escalate", category = category}
    r = ctx:chat {
      model = "remote",
      messages = {
        {role = "system", content = "You are a senior support engineer. Answer precisely."},
        {role = "user", content = text},
      },
    }
  else
    r = ctx:chat {
      model = "local",
      max_tokens = 128,
      messages = {
        {role = "system", content = "You are a friendly support agent. Answer briefly."},
        {role = "user", content = text},
      },
    }
  end
  return {category = category, difficulty = hard and "hard" or "easy", escalated = hard,
          answer = r.text}
end)
