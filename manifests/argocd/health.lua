-- Argo CD health check for spillway.dev/ExportJob.
-- Healthy once the export succeeded, Progressing while it is planned or exported (or not yet
-- observed by the coordinator), Suspended while spec.suspend holds it, Degraded when it failed
-- or cannot go on (the message says what to fix).
local hs = {}
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the spillway coordinator to pick the job up"
  return hs
end
local st = obj.status
local generation = obj.metadata ~= nil and obj.metadata.generation or nil
if generation ~= nil and (st.observedGeneration == nil or st.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the coordinator to observe generation " .. tostring(generation)
  return hs
end
local conditions = {}
if st.conditions ~= nil then
  for _, c in ipairs(st.conditions) do
    conditions[c.type] = c
  end
end
local function is_true(t)
  return conditions[t] ~= nil and conditions[t].status == "True"
end
local function message_of(t, fallback)
  if conditions[t] ~= nil and conditions[t].message ~= nil and conditions[t].message ~= "" then
    return conditions[t].message
  end
  return fallback
end
if is_true("Failed") or is_true("Stalled") or st.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message_of("Stalled", message_of("Failed", st.lastError or "The export failed"))
  return hs
end
if is_true("Suspended") or st.phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = message_of("Suspended", "spec.suspend is true")
  return hs
end
if is_true("Ready") or is_true("Complete") or st.phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = message_of("Ready", "Export complete")
  return hs
end
hs.status = "Progressing"
if st.progress ~= nil then
  hs.message = "Exporting: " .. st.progress .. " shards"
else
  hs.message = message_of("Reconciling", "Planning the export")
end
return hs
