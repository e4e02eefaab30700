# Custody `secnumcloud`: eu-sovereign in France, with an operator immune to non-EU law
# in the sense of SecNumCloud 3.2 criterion 19.6.
#
# Requires everything `eu-sovereign` requires (site country default FR via
# data.custody.params.allowed_countries), plus:
# - operator secnumcloud_immune (no non-EU holder above 24 %, all together at most 39 %,
#   of capital and of voting rights, directly or through the chain);
# - every jurisdiction the operator answers to in the EU.
package custody.secnumcloud

import rego.v1


# The deployment's parameters (data.custody.params) over this policy's defaults.
params := data.custody.lib.params({
	"allowed_countries": ["FR"],
	"locality_km": 1000,
	"require_gpu_cc": false,
	"require_locality": false,
})

default allow := false

allow if {
	count(input.devices) > 0
	count(deny) == 0
}

deny contains msg if some msg in data.custody.lib.device_deny

deny contains msg if some msg in data.custody.lib.sovereignty_deny

deny contains msg if some msg in data.custody.lib.country_deny(params.allowed_countries)

deny contains msg if some msg in data.custody.lib.cloud_act_deny

deny contains msg if some msg in data.custody.lib.secnumcloud_deny

deny contains msg if some msg in data.custody.lib.jurisdiction_deny

deny contains msg if {
	params.require_gpu_cc == true
	some msg in data.custody.lib.gpu_cc_deny
}

deny contains msg if some msg in data.custody.lib.locality_deny(params.locality_km, data.custody.lib.locality_site, params.require_locality, false)

trust_vector := data.custody.lib.trust_vector
