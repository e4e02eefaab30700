# Custody policy library: helpers every policy may use as `data.custody.lib.<name>`.
# Loaded beside each policy by custody_policy::Policy; see docs/policy.md. (Refer to them
# by full path rather than `import data.custody.lib`: the interpreter evaluates a whole
# module when it is referenced through an import alias.)
#
# Deny helpers return sets of human-readable sentences that name the node, device or
# entity concerned, so a policy builds its `deny` set from them:
#   deny contains msg if some msg in data.custody.lib.device_deny
package custody.lib

import rego.v1

# EU member states and the other EEA states (ISO 3166-1 alpha-2).
eu_eea := {
	"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
	"IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
	"IS", "LI", "NO",
}

# EU member states only.
eu := eu_eea - {"IS", "LI", "NO"}

# param(name, default): data.custody.params[name] when the deployment set it.
param(name, _) := data.custody.params[name]

param(name, dflt) := dflt if not has_param(name)

has_param(name) if {
	_ = data.custody.params[name]
}

node := sprintf("node %s", [input.node.name])

# Optional parts of the input: undefined (rather than null) when absent.
sovereignty := input.sovereignty if input.sovereignty != null

site := sovereignty.site if sovereignty.site != null

operator := sovereignty.operator if sovereignty.operator != null

locality := input.locality if input.locality != null

# Undefined without a site: then no locality check runs unless params.locality_site
# names one (sovereignty_deny already refuses the node).
site_id := site.id

# ---------------------------------------------------------------------------
# Device evidence: what the default policy requires.

device_deny contains "no evidence was presented" if count(input.devices) == 0

device_deny contains msg if {
	some name, d in input.devices
	not d.verified
	msg := sprintf("%s: evidence rejected by check `%s`", [name, object.get(d, "failed_check", "unknown")])
}

device_deny contains msg if {
	some name, d in input.devices
	d.kind == "snp"
	d.claims.policy.debug_allowed == true
	msg := sprintf("%s: SEV-SNP guest policy allows debugging", [name])
}

device_deny contains msg if {
	some name, d in input.devices
	d.kind == "nvgpu"
	d.claims.revocation == "revoked"
	msg := sprintf("%s: GPU certificate revoked", [name])
}

verified(kind) if {
	some d in input.devices
	d.kind == kind
	d.verified == true
}

# ---------------------------------------------------------------------------
# Sovereignty: registry attributes must be present and bind the hardware to a site
# with a known operator.

sovereignty_deny contains msg if {
	not sovereignty
	msg := sprintf("%s: no sovereignty attributes (no registry configured, or the node's hardware is not in it)", [node])
}

sovereignty_deny contains msg if {
	not sovereignty.hardware.bound
	sovereignty
	msg := sprintf("%s: hardware is not bound to a registry site (unmatched: %s)", [node, list(sovereignty.hardware.unmatched)])
}

sovereignty_deny contains msg if {
	sovereignty
	not site
	msg := sprintf("%s is not at a registered site", [node])
}

sovereignty_deny contains msg if {
	site
	not operator
	msg := sprintf("site %s (%s) has no registered operator", [site.name, site.id])
}

list(xs) := "none" if count(xs) == 0

list(xs) := concat(", ", [sprintf("%v", [x]) | some x in xs]) if count(xs) > 0

# Site country must be in `allowed` (an array or set of ISO codes).
country_deny(allowed) := {msg |
	# Cheap membership first: only a refused country pays for the set and its message.
	not site.country in allowed
	allowed_set := {c | some c in allowed}
	not site.country in allowed_set
	msg := sprintf("site %s (%s) is in %s, outside the allowed countries [%s]", [site.name, site.id, site.country, concat(", ", sort(allowed_set))])
}

# ---------------------------------------------------------------------------
# Operator: CLOUD Act exposure, SecNumCloud 19.6 immunity, jurisdictions.

# "operator ACME SAS is controlled 60 % by ACME Inc (US): cloud_act_exposed" from the
# reason "ACME SAS is controlled 60 % by ACME Inc (US)"; a reason that does not start
# with the operator's name is put after it.
entity_reason(op, r, flag) := sprintf("operator %s: %s", [r, flag]) if startswith(r, op.name)

entity_reason(op, r, flag) := sprintf("operator %s: %s: %s", [op.name, r, flag]) if not startswith(r, op.name)

cloud_act_deny contains msg if {
	operator.cloud_act_exposed == true
	some r in operator.cloud_act_reasons
	msg := entity_reason(operator, r, "cloud_act_exposed")
}

cloud_act_deny contains msg if {
	operator.cloud_act_exposed == true
	count(object.get(operator, "cloud_act_reasons", [])) == 0
	msg := sprintf("operator %s (%s): cloud_act_exposed", [operator.name, operator.country])
}

secnumcloud_deny contains msg if {
	operator.secnumcloud_immune != true
	some r in operator.secnumcloud_reasons
	msg := entity_reason(operator, r, "not SecNumCloud immune")
}

secnumcloud_deny contains msg if {
	operator.secnumcloud_immune != true
	count(object.get(operator, "secnumcloud_reasons", [])) == 0
	msg := sprintf("operator %s: not SecNumCloud immune (non-EU holders: largest %v %% of capital, %v %% of votes; together %v %% of capital, %v %% of votes)", [
		operator.name,
		operator.non_eu_capital_max_bp / 100, operator.non_eu_voting_max_bp / 100,
		operator.non_eu_capital_total_bp / 100, operator.non_eu_voting_total_bp / 100,
	])
}

jurisdiction_deny contains msg if {
	some j in operator.jurisdictions
	not j in eu
	msg := sprintf("operator %s answers to a non-EU jurisdiction: %s", [operator.name, j])
}

# ---------------------------------------------------------------------------
# GPUs: every GPU attested, in confidential-computing mode.

gpu_cc_deny contains msg if {
	some g in input.gpus
	g.cc_mode != "on"
	msg := sprintf("%s: GPU %d (%s) is not in confidential-computing mode (cc_mode %s)", [node, g.index, g.model, g.cc_mode])
}

gpu_cc_deny contains msg if {
	some g in input.gpus
	g.attested != true
	msg := sprintf("%s: GPU %d (%s) is not attested", [node, g.index, g.model])
}

gpu_cc_on if {
	some g in input.gpus
	g.cc_mode == "on"
	g.attested == true
}

# ---------------------------------------------------------------------------
# Locality: the proven upper bound of the node's distance to `site_id` must be at most
# `km`. With `required`, a node without proofs is refused; with `strong`, only proofs
# whose session key cannot leave the boundary count.

locality_proofs := [p | some p in locality.proofs]

locality_deny(km, site_id, required, strong) := ((missing | unbound) | too_far) | weak if {
	missing := {msg |
		required == true
		count(locality_proofs) == 0
		msg := sprintf("%s: no locality proof was presented", [node])
	}
	unbound := {msg |
		count(locality_proofs) > 0
		not locality.upper_km[site_id]
		msg := sprintf("%s: locality proofs bound no distance to site %s", [node, site_id])
	}
	too_far := {msg |
		count(locality_proofs) > 0
		d := locality.upper_km[site_id]
		d > km
		msg := sprintf("%s is proven only within %v km of site %s; the policy requires %v km", [node, round(d), site_id, km])
	}
	weak := {msg |
		strong == true
		count(locality_proofs) > 0
		locality.strong != true
		msg := sprintf("%s: every locality proof is weak (session key in plain process memory)", [node])
	}
}

# ---------------------------------------------------------------------------
# AR4SI trust vector (draft-ietf-rats-ar4si): 0 no claim, 2 affirming, 32 warning,
# 96 contraindicated.

tpm_ok if verified("tpm")

any_failed if {
	some d in input.devices
	d.verified != true
}

default trust_instance_identity := 0

trust_instance_identity := 2 if tpm_ok

trust_instance_identity := 96 if input.devices.tpm.verified == false

default trust_configuration := 0

trust_configuration := 2 if {
	tpm_ok
	count(device_deny) == 0
}

trust_configuration := 96 if {
	count(input.devices) > 0
	count(device_deny) > 0
}

default trust_executables := 0

trust_executables := 2 if tpm_ok

trust_executables := 96 if input.devices.tpm.verified == false

default trust_hardware := 0

trust_hardware := 2 if {
	count(input.devices) > 0
	not any_failed
}

trust_hardware := 96 if any_failed

default trust_runtime_opaque := 32

trust_runtime_opaque := 2 if {
	verified("snp")
	not any_failed
}

trust_runtime_opaque := 96 if {
	some d in input.devices
	d.kind == "snp"
	d.verified != true
}

default trust_storage_opaque := 0

trust_storage_opaque := 2 if tpm_ok

trust_vector := {
	"instance_identity": trust_instance_identity,
	"configuration": trust_configuration,
	"executables": trust_executables,
	"file_system": 0,
	"hardware": trust_hardware,
	"runtime_opaque": trust_runtime_opaque,
	"storage_opaque": trust_storage_opaque,
	"sourced_data": 0,
}
