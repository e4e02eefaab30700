# Custody default appraisal policy.
#
# Input (see custody_policy::PolicyInput): one entry per device under `devices`, each
# { kind, verified, failed_check?, claims }. A node passes when every device's evidence
# verified, at least one device is present, no SNP guest runs with debug enabled and no
# GPU result hides a failed revocation check.
package custody.default

import rego.v1

default allow := false

allow if {
	count(input.devices) > 0
	count(deny) == 0
}

deny contains "no evidence was presented" if count(input.devices) == 0

deny contains msg if {
	some name, d in input.devices
	not d.verified
	msg := sprintf("%s: evidence rejected by check `%s`", [name, d.failed_check])
}

deny contains msg if {
	some name, d in input.devices
	d.kind == "snp"
	d.claims.policy.debug_allowed == true
	msg := sprintf("%s: SEV-SNP guest policy allows debugging", [name])
}

deny contains msg if {
	some name, d in input.devices
	d.kind == "nvgpu"
	d.claims.revocation == "revoked"
	msg := sprintf("%s: GPU certificate revoked", [name])
}
