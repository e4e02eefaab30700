# Custody `eu-sovereign`: the node's hardware sits at a registered site in the EU/EEA,
# run by an operator the US CLOUD Act does not reach.
#
# Requires everything `default` requires, plus:
# - sovereignty attributes from the signed registry, hardware bound to a site with an operator;
# - site country in data.custody.params.allowed_countries (default: EU/EEA);
# - operator not cloud_act_exposed;
# - with params.require_gpu_cc (default false): every GPU attested in CC mode;
# - when locality proofs are present, the proven upper bound of the node's distance to
#   params.locality_site (default: its registered site) at most params.locality_km
#   (default 1000); with params.require_locality (default false), a proof is required.
package custody.eu_sovereign

import rego.v1


# The deployment's parameters (data.custody.params) over this policy's defaults.
params := data.custody.lib.params({
	"allowed_countries": data.custody.lib.eu_eea,
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

deny contains msg if {
	params.require_gpu_cc == true
	some msg in data.custody.lib.gpu_cc_deny
}

deny contains msg if some msg in data.custody.lib.locality_deny(params.locality_km, data.custody.lib.locality_site, params.require_locality, false)

trust_vector := data.custody.lib.trust_vector
