use super::*;

fn dot(site: &str, lat: f64, lon: f64) -> Dot {
    Dot {
        site: site.into(),
        label: site.into(),
        title: site.into(),
        lat,
        lon,
        class: "ok",
    }
}

#[test]
fn every_embedded_country_parses() {
    let all = countries();
    assert_eq!(all.len(), 177, "Natural Earth 110m has 177 countries");
    for code in ["FR", "DE", "US", "NL", "JP"] {
        assert!(all.iter().any(|c| c.code == code), "{code}");
    }
}

#[test]
fn paris_and_frankfurt_draw_their_countries_and_fit_the_view() {
    let dots = [dot("par-1", 48.86, 2.35), dot("fra-1", 50.11, 8.68)];
    let v = View::around(&dots).unwrap();
    assert!(v.width() <= MAX_W + 0.01 && v.height() <= MAX_H + 0.01);
    let ratio = v.width() / v.height();
    assert!((1.99..=3.01).contains(&ratio), "landscape: {ratio}");
    for d in &dots {
        let (x, y) = v.xy(d.lon, d.lat);
        assert!(x > 0.0 && x < v.width() && y > 0.0 && y < v.height(), "{d:?}");
    }
    let s = svg(&dots, &["FR".into(), "DE".into()]);
    assert!(s.contains("data-country=\"FR\""));
    assert!(s.contains("class=\"land sited\" data-country=\"DE\""));
    assert!(s.contains("data-country=\"BE\""), "neighbours are drawn");
    assert!(!s.contains("data-country=\"JP\""), "far countries are not");
    assert!(s.contains("data-dots=\"2\""));
}

#[test]
fn no_dot_no_map_and_bad_lines_are_skipped() {
    assert_eq!(svg(&[], &[]), "");
    assert_eq!(parse_line("FR\tFrance"), None);
    assert_eq!(parse_line("FR\tFrance\t1,2 x,3"), None);
    let c = parse_line("FR\tFrance\t0,0 100,0 100,100;zz").unwrap();
    assert_eq!(c.rings, vec![vec![(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)]]);
}

#[test]
fn a_site_at_the_edge_of_the_world_stays_on_the_map() {
    let dots = [dot("edge", 84.0, 179.9), dot("other", -84.0, -179.9)];
    let v = View::around(&dots).unwrap();
    assert!(v.west >= -180.0 && v.east <= 180.0 && v.south >= -85.0 && v.north <= 85.0);
    assert!(!svg(&dots, &[]).is_empty());
}
