-- Argo CD health check for chromasnap.dev/ChromaCollection.
--
-- Install it as resource.customizations.health.chromasnap.dev_ChromaCollection in the
-- argocd-cm ConfigMap (docs/gitops.md; examples/gitops/argocd-cm-health.yaml carries
-- exactly this script). Written for Argo CD's Lua 5.1 (gopher-lua): no goto, no
-- integer division, only the base library.
--
--   Healthy      Ready=True, and the status describes the current generation
--   Progressing  no status yet, the operator has not observed the latest spec, or the
--                collection is still coming up (pods starting, first snapshot,
--                a compaction running, a child being re-created)
--   Degraded     the spec cannot be applied (invalid spec, missing Secret or key, a
--                child refused), a rollout is stuck (ProgressDeadlineExceeded), or the
--                last compaction failed
--   Suspended    writers or readers are scaled to zero on purpose

local hs = {}

local SPEC_PROBLEMS = {
  InvalidSpec = true,
  InvalidSchedule = true,
  CredentialsSecretNotFound = true,
  CredentialsSecretKeyMissing = true,
  AuthSecretNotFound = true,
  AuthSecretKeyMissing = true,
  ApplyRejected = true,
}

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

local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the chromasnap operator to report a status"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to apply generation " .. generation ..
    " (the status describes generation " .. status.observedGeneration .. ")"
  return hs
end

local ready = find(status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end

if SPEC_PROBLEMS[ready.reason] then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

for _, ctype in ipairs({"WritersReady", "ReadersReady"}) do
  local c = find(status.conditions, ctype)
  if c ~= nil and c.status == "False" and c.reason == "ProgressDeadlineExceeded" then
    hs.status = "Degraded"
    hs.message = ctype .. " " .. describe(c)
    return hs
  end
end

local compactor = find(status.conditions, "CompactorHealthy")
if compactor ~= nil and compactor.status == "False" and compactor.reason ~= "NotCreated"
    and compactor.reason ~= "CronJobMissing" then
  hs.status = "Degraded"
  hs.message = "CompactorHealthy " .. describe(compactor)
  return hs
end

for _, ctype in ipairs({"WritersReady", "ReadersReady"}) do
  local c = find(status.conditions, ctype)
  if c ~= nil and c.status == "False" and c.reason == "ScaledToZero" then
    hs.status = "Suspended"
    hs.message = ctype .. " " .. describe(c)
    return hs
  end
end

hs.status = "Progressing"
hs.message = describe(ready)
return hs
