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


allowed_countries := data.custody.lib.param("allowed_countries", ["FR"])

locality_km := data.custody.lib.param("locality_km", 1000)

# The site the locality bound is checked against: the parameter, else the registered site.
locality_site := data.custody.params.locality_site

locality_site := data.custody.lib.site_id if not data.custody.lib.has_param("locality_site")

require_gpu_cc := data.custody.lib.param("require_gpu_cc", false)

require_locality := data.custody.lib.param("require_locality", false)

default allow := false

allow if {
	count(input.devices) > 0
	count(deny) == 0
}

deny contains msg if some msg in data.custody.lib.device_deny

deny contains msg if some msg in data.custody.lib.sovereignty_deny

deny contains msg if some msg in data.custody.lib.country_deny(allowed_countries)

deny contains msg if some msg in data.custody.lib.cloud_act_deny

deny contains msg if some msg in data.custody.lib.secnumcloud_deny

deny contains msg if some msg in data.custody.lib.jurisdiction_deny

deny contains msg if {
	require_gpu_cc == true
	some msg in data.custody.lib.gpu_cc_deny
}

deny contains msg if some msg in data.custody.lib.locality_deny(locality_km, locality_site, require_locality, false)

trust_vector := data.custody.lib.trust_vector
