#!/usr/bin/python3
"""A real RTSP camera for the tests: GStreamer's RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0)
serving a solid-colour videotestsrc at 320x240, 10 fps, as H.264 (x264enc) or H.265 (x265enc) on
127.0.0.1:PORT/PATH, optionally behind basic or digest auth. Prints "ready" on stdout once it listens;
runs until killed.

    rtsp_server.py --port 8554 [--path /cam] [--codec h264|h265] [--color 0xffe08020]
                   [--user U --password P [--auth basic|digest]]
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/cam")
    p.add_argument("--codec", choices=["h264", "h265"], default="h264")
    p.add_argument("--color", default="0xffe08020", help="videotestsrc foreground-color, big-endian ARGB")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--auth", choices=["basic", "digest"], default="basic")
    a = p.parse_args()

    Gst.init(None)
    source = (
        f"videotestsrc is-live=true pattern=solid-color foreground-color={int(a.color, 0)} "
        "! video/x-raw,width=320,height=240,framerate=10/1 ! videoconvert"
    )
    if a.codec == "h264":
        encode = "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! rtph264pay name=pay0 pt=96"
    else:
        encode = "x265enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! rtph265pay name=pay0 pt=96"

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( {source} ! {encode} )")
    # one pipeline per client, so every session starts with a key frame
    factory.set_shared(False)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    if a.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "camera-user")
        if a.auth == "basic":
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password or ""), token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
        else:
            auth.add_digest(a.user, a.password or "", token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("camera-user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        permissions.add_permission_for_role("camera-user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory(a.path, factory)
    if server.attach(None) == 0:
        print(f"unable to listen on 127.0.0.1:{a.port}", file=sys.stderr)
        sys.exit(1)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
