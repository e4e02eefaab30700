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
param(name, dflt) := object.get(params_doc, name, dflt)

# The deployment's parameters, read once per decision; {} when unset or not an object.
default params_doc := {}

params_doc := data.custody.params if is_object(data.custody.params)

has_param(name) if {
	_ = data.custody.params[name]
}

# params(defaults): the deployment's parameters over a policy's defaults, each key
# data.custody.params[key] where the deployment set it, else the default (as `param`).
# A policy reads it once per decision into a rule of its own: one call, where a
# `param` per parameter made three each.
params(defaults) := object.union(defaults, params_doc)

node := sprintf("node %s", [input.node.name])

# Optional parts of the input: undefined (rather than null) when absent.
sovereignty := input.sovereignty if input.sovereignty != null

site := sovereignty.site if sovereignty.site != null

operator := sovereignty.operator if sovereignty.operator != null

locality := input.locality if input.locality != null

# Undefined without a site: then no locality check runs unless params.locality_site
# names one (sovereignty_deny already refuses the node).
site_id := site.id

# The site the locality bound is checked against: params.locality_site where the
# deployment set it (whatever its value), else the registered site. Two definitions
# rather than `has_param`, a function call; the second covers a parameter without a site.
locality_site := object.get(params_doc, "locality_site", input.sovereignty.site.id)

locality_site := params_doc.locality_site if not input.sovereignty.site.id

# ---------------------------------------------------------------------------
# Device evidence: what the default policy requires.

device_deny contains "no evidence was presented" if count(input.devices) == 0

# `verified` is a boolean in every checked input, so a failed device shows up in
# device_status and the walk below runs only when one did.
device_deny contains msg if {
	any_failed
	some name, d in input.devices
	not d.verified
	msg := sprintf("%s: evidence rejected by check `%s`", [name, object.get(d, "failed_check", "unknown")])
}

# `device_flags` is bound once, before the walk: each reference to a rule is a call in
# the policy VM, which costs as much as a few dozen instructions. (`d :=
# input.devices[name]` rather than `some name, d in`: one instruction fewer per device.)
device_deny contains msg if {
	flags := device_flags
	some name
	d := input.devices[name]
	object.subset(d, flags[d.kind])
	msg := sprintf("%s: %s", [name, device_flag_reasons[d.kind]])
}

# The claim that refuses a device of a kind, as a pattern the device's object contains
# (object.subset: one builtin call per device), and the reason given: one walk of the
# devices checks every kind.
device_flags := {
	"snp": {"claims": {"policy": {"debug_allowed": true}}},
	"nvgpu": {"claims": {"revocation": "revoked"}},
}

device_flag_reasons := {
	"snp": "SEV-SNP guest policy allows debugging",
	"nvgpu": "GPU certificate revoked",
}

# Every device's [verified, kind], walked once: the device checks and the trust claims
# read this set rather than walking the devices again (the policy VM's cost is mostly
# per instruction, and each walk is a few dozen).
device_status := {[d.verified, d.kind] | d := input.devices[_]}

verified(kind) if [true, kind] in device_status

# `verified` (a boolean in every checked input) first in each pair, so a failed device's
# pair sorts first (false < true): the set's least element answers without another walk.
default any_failed := false

any_failed := min(device_status)[0] == false

# ---------------------------------------------------------------------------
# Sovereignty: registry attributes must be present and bind the hardware to a site
# with a known operator.

# The common case first, in a few instructions and no rule calls: hardware bound to a
# site that has an operator. Otherwise every reason that applies.
#
# The conditions read the input rather than the `sovereignty`, `site` and `operator`
# rules: in regorus 0.14.1's VM, a rule reference that fails as a condition at the top
# of a comprehension (before any iteration) fails the whole rule body instead of leaving
# the comprehension empty (tests/equivalence.rs catches it; the reproducer is in
# docs/upstream/regorus-0.14.1-rvm-bugs.md). `object.get(x, k, null) == null` is
# "absent or null", as the rules read it.
sovereignty_deny := set() if {
	input.sovereignty.hardware.bound
	input.sovereignty.site != null
	input.sovereignty.operator != null
} else := ((absent | unbound) | off_site) | no_operator if {
	absent := {msg |
		object.get(input, "sovereignty", null) == null
		msg := sprintf("%s: no sovereignty attributes (no registry configured, or the node's hardware is not in it)", [node])
	}
	unbound := {msg |
		input.sovereignty != null
		not input.sovereignty.hardware.bound
		msg := sprintf("%s: hardware is not bound to a registry site (unmatched: %s)", [node, list(input.sovereignty.hardware.unmatched)])
	}
	off_site := {msg |
		input.sovereignty != null
		object.get(input.sovereignty, "site", null) == null
		msg := sprintf("%s is not at a registered site", [node])
	}
	no_operator := {msg |
		input.sovereignty.site != null
		object.get(input.sovereignty, "operator", null) == null
		msg := sprintf("site %s (%s) has no registered operator", [input.sovereignty.site.name, input.sovereignty.site.id])
	}
}

list(xs) := "none" if count(xs) == 0

list(xs) := concat(", ", [sprintf("%v", [x]) | some x in xs]) if count(xs) > 0

# Site country must be in `allowed` (an array or set of ISO codes).
country_deny(allowed) := {msg |
	# Cheap membership first, read from the input rather than through the `site` rule
	# (a call): only a refused country pays for the set and its message.
	not input.sovereignty.site.country in allowed
	allowed_set := {c | some c in allowed}
	not site.country in allowed_set
	msg := sprintf("site %s (%s) is in %s, outside the allowed countries [%s]", [site.name, site.id, site.country, concat(", ", sort(allowed_set))])
}

# ---------------------------------------------------------------------------
# Operator: CLOUD Act exposure, SecNumCloud 19.6 immunity, jurisdictions.

# One sentence per registry reason, naming the operator once and ending with `flag`:
# - the registry's own form, "operator ACME SAS is controlled 60 % by ACME Inc (US):
#   cloud_act_exposed", is kept as it is (the flag is added when it is missing);
# - "ACME SAS is controlled 60 % by ACME Inc (US)" becomes "operator ACME SAS is
#   controlled ...: cloud_act_exposed";
# - a reason that names neither ("US office in Delaware") is put after the operator's name.
entity_reason(op, r, flag) := r if {
	startswith(r, concat("", ["operator ", op.name]))
	endswith(r, concat("", [": ", flag]))
}

entity_reason(op, r, flag) := sprintf("%s: %s", [r, flag]) if {
	startswith(r, concat("", ["operator ", op.name]))
	not endswith(r, concat("", [": ", flag]))
}

entity_reason(op, r, flag) := sprintf("operator %s: %s", [r, flag]) if {
	not startswith(r, concat("", ["operator ", op.name]))
	startswith(r, op.name)
}

entity_reason(op, r, flag) := sprintf("operator %s: %s: %s", [op.name, r, flag]) if {
	not startswith(r, concat("", ["operator ", op.name]))
	not startswith(r, op.name)
}

# The operator checks read their flag straight from the input: a reference to the
# `operator` rule is a call, and so the passing case makes none. (A null or absent
# operator leaves the path undefined, as it leaves the rule.)
cloud_act_deny contains msg if {
	input.sovereignty.operator.cloud_act_exposed == true
	some r in operator.cloud_act_reasons
	msg := entity_reason(operator, r, "cloud_act_exposed")
}

cloud_act_deny contains msg if {
	input.sovereignty.operator.cloud_act_exposed == true
	count(object.get(operator, "cloud_act_reasons", [])) == 0
	msg := sprintf("operator %s (%s): cloud_act_exposed", [operator.name, operator.country])
}

secnumcloud_deny contains msg if {
	input.sovereignty.operator.secnumcloud_immune != true
	some r in operator.secnumcloud_reasons
	msg := entity_reason(operator, r, "not SecNumCloud immune")
}

secnumcloud_deny contains msg if {
	input.sovereignty.operator.secnumcloud_immune != true
	count(object.get(operator, "secnumcloud_reasons", [])) == 0
	msg := sprintf("operator %s: not SecNumCloud immune (non-EU holders: largest %v %% of capital, %v %% of votes; together %v %% of capital, %v %% of votes)", [
		operator.name,
		operator.non_eu_capital_max_bp / 100, operator.non_eu_voting_max_bp / 100,
		operator.non_eu_capital_total_bp / 100, operator.non_eu_voting_total_bp / 100,
	])
}

jurisdiction_deny contains msg if {
	some j in input.sovereignty.operator.jurisdictions
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

# The session key is held in the node's own attested confidential VM (the verifier's
# `key_protection`, docs/locality.md); a GPU in CC mode never makes it so.
cvm_attested if input.key_protection.level == "cvm"

gpu_cc_on if {
	some g in input.gpus
	g.cc_mode == "on"
	g.attested == true
}

# ---------------------------------------------------------------------------
# Locality: the proven upper bound of the node's distance to `site_id` must be at most
# `km`. With `required`, a node without proofs is refused; with `strong`, only proofs
# whose session key cannot leave the boundary count.

default proof_count := 0

proof_count := count(locality.proofs)

# The common case first, in a few instructions: proofs that bound the distance to the
# site within `km`, and no strength the proofs lack. Otherwise, without proofs only
# `required` can refuse; with proofs, the bound and its strength, with their reasons.
locality_deny(km, site_id, required, strong) := set() if {
	count(input.locality.proofs) > 0
	d := input.locality.upper_km[site_id]
	is_number(d)
	d <= km
	not locality_weak(strong)
} else := {msg |
	required == true
	msg := sprintf("%s: no locality proof was presented", [node])
} if {
	proof_count == 0
} else := (unbound | too_far) | weak if {
	proof_count > 0
	unbound := {msg |
		not locality.upper_km[site_id]
		msg := sprintf("%s: locality proofs bound no distance to site %s", [node, site_id])
	}
	too_far := {msg |
		d := locality.upper_km[site_id]
		d > km
		msg := sprintf("%s is proven only within %v km of site %s; the policy requires %v km", [node, round(d), site_id, km])
	}
	weak := {msg |
		locality_weak(strong)
		msg := sprintf("%s: every locality proof is weak (session key in plain process memory)", [node])
	}
}

# Strong proofs are required and the proofs are not strong.
locality_weak(strong) if {
	strong == true
	input.locality.strong != true
}

# ---------------------------------------------------------------------------
# AR4SI trust vector (draft-ietf-rats-ar4si): 0 no claim, 2 affirming, 32 warning,
# 96 contraindicated. Strongest finding first: a contraindication wins over an
# affirmation, so two devices of one kind that disagree (one verified, one not) give 96.
#
# | claim             | 96                          | 2                                 | else |
# |-------------------|-----------------------------|-----------------------------------|------|
# | instance_identity | a TPM failed                | a TPM verified                    | 0    |
# | configuration     | devices, some device_deny   | a TPM verified, no device_deny    | 0    |
# | executables       | as instance_identity        |                                   |      |
# | hardware          | a device failed             | some device                       | 0    |
# | runtime_opaque    | a CVM report failed         | one verified, no device failed    | 32   |
# | storage_opaque    |                             | a TPM verified                    | 0    |
#
# One rule computes every claim from a few booleans, each claim a table lookup:
# `{true: a, false: b}[c]` reads "a if c, else b". A rule per claim, each with an `else`
# chain, read better but made twenty rule calls per decision, and a call in the policy VM
# costs as much as a few dozen instructions. The devices are walked once, into
# device_status; `failed` is any_failed, already computed for device_deny.
trust_vector := {
	"instance_identity": identity,
	"configuration": {true: {true: 96, false: 0}[has_devices], false: {true: 2, false: 0}[tpm_ok]}[denied],
	"executables": identity,
	"file_system": 0,
	"hardware": {true: 96, false: {true: 2, false: 0}[has_devices]}[failed],
	"runtime_opaque": {true: 96, false: {true: {true: 32, false: 2}[failed], false: 32}[cvm_ok]}[cvm_failed],
	"storage_opaque": {true: 2, false: 0}[tpm_ok],
	"sourced_data": 0,
} if {
	status := device_status
	tpm_failed := [false, "tpm"] in status
	tpm_ok := [true, "tpm"] in status
	# A confidential VM's report: SEV-SNP, Intel TDX, or SEV-SNP behind Azure's paravisor
	# (one set operation each; `!= set()` spares a `count` call).
	cvm_failed := {[false, "snp"], [false, "tdx"], [false, "azure"]} & status != set()
	cvm_ok := {[true, "snp"], [true, "tdx"], [true, "azure"]} & status != set()
	failed := any_failed
	has_devices := count(input.devices) > 0
	denied := device_deny != set()
	identity := {true: 96, false: {true: 2, false: 0}[tpm_ok]}[tpm_failed]
}
