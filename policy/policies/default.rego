# Custody default appraisal policy.
#
# Input (see docs/policy.md): one entry per device under `devices`, each
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

deny contains msg if some msg in data.custody.lib.device_deny

trust_vector := data.custody.lib.trust_vector
