-- wrk script: one single-sentence embeddings request per call, model from $MODEL.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local model = os.getenv("MODEL")
local topics = { "the weather", "a new database engine", "tokenizers", "mountain hiking" }
local n = 0
request = function()
  n = n + 1
  local body = '{"model":"' .. model .. '","input":"Sentence ' .. n .. ' talks about ' .. topics[n % 4 + 1] .. '."}'
  return wrk.format(nil, "/v1/embeddings", nil, body)
end
