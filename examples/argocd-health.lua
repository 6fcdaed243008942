-- Argo CD health for identity-migrator's three kinds (IdentityMigration,
-- TableMigration, SchemaMigration), read from their status conditions.
-- Install it as resource.customizations.health.<group>_<kind> in argocd-cm
-- (see argocd-health-cm.yaml), so that a sync wave after a migration waits
-- until the migration is done, and a failed one shows Degraded.
local hs = {}
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to pick the migration up"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "the operator has not acted on the latest spec yet"
  return hs
end
local function condition(kind)
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end
local function holds(kind)
  local c = condition(kind)
  return c ~= nil and c.status == "True", c
end
for _, bad in ipairs({ "Drifted", "Stalled", "Degraded" }) do
  local on, c = holds(bad)
  if on then
    hs.status = "Degraded"
    hs.message = c.message
    return hs
  end
end
local ready, readiness = holds("Ready")
if ready then
  hs.status = "Healthy"
  hs.message = readiness.message
  return hs
end
local waiting, approval = holds("AwaitingApproval")
if waiting or (readiness ~= nil and (readiness.reason == "AwaitingApproval" or readiness.reason == "Suspended")) then
  hs.status = "Suspended"
  hs.message = (approval or readiness).message
  return hs
end
hs.status = "Progressing"
if readiness ~= nil then
  hs.message = readiness.message
end
return hs
