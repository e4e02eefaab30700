"""report.py against fake criterion output written to a temp dir at test time.

Run: python3 -m unittest discover -s bench/anchors  (standard library only)
"""

import contextlib
import io
import json
import os
import tempfile
import unittest

import report

ANCHORS = [
    '{"anchor": "keylime checkquote", "version": "7.14.3", "median_us": 150.0, "mean_us": 155.0, "iters": 10}',
    '{"anchor": "nv-local-gpu-verifier offline", "version": "2.7.3", "median_us": 15000.0, "mean_us": 1, "iters": 1}',
]


def fake_estimates(root, rel, median_ns):
    d = os.path.join(root, rel, "new")
    os.makedirs(d)
    est = {
        "mean": {"point_estimate": median_ns * 1.1},
        "median": {"point_estimate": median_ns, "standard_error": 1.0},
    }
    with open(os.path.join(d, "estimates.json"), "w", encoding="utf-8") as f:
        json.dump(est, f)


class ReportTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.crit = os.path.join(self.tmp.name, "criterion")
        self.anchors = os.path.join(self.tmp.name, "anchors.jsonl")
        with open(self.anchors, "w", encoding="utf-8") as f:
            f.write("noise that is not JSON\n" + "\n".join(ANCHORS) + "\n")

    def tearDown(self):
        self.tmp.cleanup()

    def run_main(self, *extra):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = report.main(["--criterion", self.crit, "--anchors", self.anchors, *extra])
        return rc, buf.getvalue()

    def write_all(self, hopper_warm_ns=400_000.0):
        fake_estimates(self.crit, "tpm/quote", 30_000.0)  # 5.0x Keylime: met
        fake_estimates(self.crit, "tpm/quote-cold", 40_000.0)  # no goal
        fake_estimates(self.crit, "snp/milan-cold", 2_000_000.0)
        fake_estimates(self.crit, "nvgpu/hopper-cold", 1_500_000.0)  # 10x: met
        fake_estimates(self.crit, "nvgpu/hopper-warm", hopper_warm_ns)  # 37.5x: met
        fake_estimates(self.crit, "floor/p384-verify", 250_000.0)

    def test_all_present(self):
        self.write_all()
        rc, out = self.run_main("--strict")
        self.assertEqual(rc, 0, out)
        rows = {line.split()[0]: line for line in out.splitlines() if "/" in line.split(" ")[0]}
        self.assertRegex(rows["tpm/quote"], r"30\.0 us .*keylime checkquote 7\.14\.3 .*150\.0 us .*5\.0x .*>= 4x .*yes")
        self.assertRegex(rows["nvgpu/hopper-cold"], r"1\.50 ms .*15\.00 ms .*10\.0x .*>= 8x .*yes")
        self.assertRegex(rows["nvgpu/hopper-warm"], r"400\.0 us .*37\.5x .*>= 30x .*yes")
        self.assertRegex(rows["snp/milan-cold"], r"2\.00 ms +- +- +- +- +-$")
        self.assertIn(
            "nvgpu/hopper-cold: 5 signature verifications = 1250.0 us, Custody at 1.20x the floor", out
        )
        self.assertIn("nvgpu/hopper-warm: 1 signature verification = 250.0 us, Custody at 1.60x the floor", out)

    def test_goal_missed(self):
        self.write_all(hopper_warm_ns=1_000_000.0)  # 15x < 30x
        rc, out = self.run_main()
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"nvgpu/hopper-warm .*15\.0x .*>= 30x +no")
        rc, _ = self.run_main("--strict")
        self.assertEqual(rc, 1)

    def test_missing_result_fails(self):
        self.write_all()
        os.remove(os.path.join(self.crit, "snp", "milan-cold", "new", "estimates.json"))
        rc, out = self.run_main()
        self.assertEqual(rc, 2)
        self.assertIn("MISSING snp/milan-cold: not found", out)

    def test_flat_layout(self):
        # c.bench_function("tpm/quote") without a group: criterion writes tpm_quote/.
        self.write_all()
        os.rename(os.path.join(self.crit, "tpm", "quote"), os.path.join(self.crit, "tpm_quote"))
        ns, where = report.criterion_median_ns(self.crit, "tpm/quote")
        self.assertEqual(ns, 30_000.0)
        self.assertTrue(where.endswith(os.path.join("tpm_quote", "new", "estimates.json")))

    def test_garbage_estimates(self):
        self.write_all()
        with open(os.path.join(self.crit, "tpm", "quote", "new", "estimates.json"), "w") as f:
            f.write('{"median": {}}')
        rc, out = self.run_main()
        self.assertEqual(rc, 2)
        self.assertIn("MISSING tpm/quote:", out)
        self.assertIn("unreadable", out)

    def test_stale_result_fails(self):
        self.write_all()
        old = os.path.join(self.crit, "nvgpu", "hopper-cold", "new", "estimates.json")
        os.utime(old, (1_000_000, 1_000_000))
        rc, out = self.run_main("--since", "2000000")
        self.assertEqual(rc, 2)
        self.assertIn("MISSING nvgpu/hopper-cold:", out)
        self.assertIn("stale", out)
        self.assertEqual(out.count("MISSING"), 2)  # the row and the problem line

    def test_missing_anchor_fails(self):
        self.write_all()
        with open(self.anchors, "w", encoding="utf-8") as f:
            f.write(ANCHORS[0] + "\n")
        rc, out = self.run_main()
        self.assertEqual(rc, 2)
        self.assertIn("anchor 'nv-local-gpu-verifier offline' was not measured", out)

    def test_faster_anchor_run_counts(self):
        slow = '{"anchor": "keylime checkquote", "version": "7.14.3", "median_us": 300.0, "mean_us": 1, "iters": 1}'
        a = report.load_anchors([slow, ANCHORS[0], slow])
        self.assertEqual(a["keylime checkquote"]["median_us"], 150.0)
        self.assertEqual(a["keylime checkquote"]["runs"], 3)


if __name__ == "__main__":
    unittest.main()
