-- A triage workflow: a short local classification first; only hard cases go to the remote
-- model ("local" and "remote" name the configured local and remote models; without a local
-- model "local" means "auto"). Input: the ticket text. Result: {category, difficulty, answer, escalated}.
-- Try: wye agent run triage "My invoice shows VAT twice and the refund API returns 409"

workflow("triage", function(ctx, input)
  local text = type(input) == "table" and (input.text or "") or tostring(input or "")
  ctx:emit {type = "triage", stage = "classify"}
  local c = ctx:chat {
    model = "local",
    max_tokens = 8,
    messages = {
      {role = "system", content = "Classify the support ticket. Answer with one word: "
        .. "easy or hard."},
      {role = "user", content = text},
    },
  }
  local verdict = (c.text or ""):lower()
  local hard = verdict:find("hard", 1, true) ~= nil or #text > 400
  local answer
  if hard then
    ctx:emit {type = "triage", stage = "escalate"}
    local r = ctx:chat {
      model = "remote",
      messages = {
        {role = "system", content = "You are a senior support engineer. Answer precisely."},
        {role = "user", content = text},
      },
    }
    answer = r.text
  else
    answer = c.text
  end
  return {difficulty = hard and "hard" or "easy", escalated = hard, answer = answer,
          classifier = verdict}
end)
