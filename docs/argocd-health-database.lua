-- Argo CD health check for chromasnap.dev/ChromaDatabase (a pool of collections).
--
-- Install it as resource.customizations.health.chromasnap.dev_ChromaDatabase in the
-- argocd-cm ConfigMap (examples/gitops/argocd-cm-health.yaml carries exactly this
-- script). Lua 5.1 (gopher-lua), base library only.
--
--   Healthy      Ready=True for the current generation, and no collection fails to compact
--   Progressing  no status yet, the latest spec not observed yet, or no pool pod ready yet
--   Degraded     the spec cannot be applied, or some collection's compactions fail
--                (status.failing names up to ten, with why)
--   Suspended    pool.replicas is 0

local hs = {}

local function find(conditions, ctype)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to report"
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "the operator has not observed the latest spec yet"
  return hs
end

local ready = find(status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "no Ready condition yet"
  return hs
end
if ready.reason == "InvalidSpec" then
  hs.status = "Degraded"
  hs.message = ready.message
  return hs
end
if ready.reason == "ScaledToZero" then
  hs.status = "Suspended"
  hs.message = ready.message
  return hs
end
if ready.status ~= "True" then
  hs.status = "Progressing"
  hs.message = ready.message
  return hs
end
local failing = status.failingCollections
if failing ~= nil and failing > 0 then
  local first = ""
  if status.failing ~= nil and status.failing[1] ~= nil then
    first = " (e.g. " .. status.failing[1].id .. ": " .. status.failing[1].reason .. ")"
  end
  hs.status = "Degraded"
  hs.message = failing .. " collection(s) fail to compact" .. first
  return hs
end
hs.status = "Healthy"
hs.message = ready.message
return hs
