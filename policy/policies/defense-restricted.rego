# Custody `defense-restricted`: the strictest shipped policy.
#
# - every device's evidence verified (and everything `default` requires);
# - a verified TPM, and a confidential VM: a verified SEV-SNP report or a GPU attested in
#   CC mode;
# - every GPU attested, in CC mode "on";
# - a strong locality proof (session key in CVM memory or TPM-bound) placing the node
#   within data.custody.params.locality_km (default 100) of params.locality_site
#   (default: its registered site);
# - site country in params.allowed_countries (default ["FR"]);
# - operator not cloud_act_exposed, SecNumCloud immune, only EU jurisdictions;
# - the node neither failed nor revoked.
package custody.defense_restricted

import rego.v1

import data.custody.lib

allowed_countries := lib.param("allowed_countries", ["FR"])

locality_km := lib.param("locality_km", 100)

# The site the locality bound is checked against: the parameter, else the registered site.
locality_site := data.custody.params.locality_site

locality_site := lib.site_id if not lib.has_param("locality_site")

default allow := false

allow if {
	count(input.devices) > 0
	count(deny) == 0
}

deny contains msg if some msg in lib.device_deny

deny contains msg if {
	not lib.verified("tpm")
	msg := sprintf("%s has no verified TPM evidence", [lib.node])
}

deny contains msg if {
	not lib.verified("snp")
	not lib.gpu_cc_on
	msg := sprintf("%s does not run in a confidential VM: no verified SEV-SNP report and no GPU attested in CC mode", [lib.node])
}

deny contains msg if some msg in lib.gpu_cc_deny

deny contains msg if some msg in lib.sovereignty_deny

deny contains msg if some msg in lib.country_deny(allowed_countries)

deny contains msg if some msg in lib.cloud_act_deny

deny contains msg if some msg in lib.secnumcloud_deny

deny contains msg if some msg in lib.jurisdiction_deny

deny contains msg if some msg in lib.locality_deny(locality_km, locality_site, true, true)

deny contains msg if {
	input.node.state in {"failed", "revoked"}
	msg := sprintf("%s is %s", [lib.node, input.node.state])
}

trust_vector := lib.trust_vector
