//! SDP bodies of offers and answers (from NG requests and SIP messages).

use std::net::{IpAddr, Ipv4Addr};

use linecord_sdp::{MediaPorts, RewritePlan, Sdp, SdpError, MAX_SDP_SIZE};

/// Parses, inspects every media description, and rewrites every stream to relay ports as the
/// recorder does; the rewrite grows by a bounded amount per stream and parses again with the
/// same number of media lines.
pub fn parse_and_rewrite(data: &[u8]) {
    let Ok(sdp) = Sdp::parse(data) else {
        return;
    };
    let medias = sdp.medias();
    for m in &medias {
        let _ = m.clock_rate();
        let _ = m.rtp_peer();
        let _ = m.rtcp_peer();
    }
    let _ = sdp.session_address();
    let plan = RewritePlan {
        address: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        medias: (0..medias.len())
            .map(|i| {
                // Even ports from 30000 up, wrapping below 65000, never 0.
                let rtp = (30_000 + 2 * (i % 17_000)) as u16;
                Some(MediaPorts { rtp, rtcp: rtp + 1 })
            })
            .collect(),
        replace_origin: true,
        remove_ice: true,
    };
    if let Ok(out) = sdp.rewrite(&plan) {
        // The rewrite adds at most a `c=` line and longer ports and addresses per stream.
        let most = data.len() + 128 * (medias.len() + 1);
        assert!(
            out.len() <= most,
            "the rewrite grew {} bytes to {} (more than {most})",
            data.len(),
            out.len()
        );
        match Sdp::parse(&out) {
            Ok(again) => assert_eq!(
                again.medias().len(),
                medias.len(),
                "the rewrite changed the number of media lines"
            ),
            // Only the size limit of an input may refuse what an input at the limit grew to.
            Err(SdpError::TooLarge) if out.len() > MAX_SDP_SIZE => {}
            Err(e) => panic!("the rewritten SDP does not parse: {e}"),
        }
    }
}
