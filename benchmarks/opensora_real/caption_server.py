"""A chat-completions server giving realistic captions (varied length, punctuation, quotes, newlines, non-ASCII)."""

import hashlib
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CAPS = [
    "The video shows a pedestrian plaza seen from a high, fixed camera. People in winter coats walk across the frame in both directions, some alone, some in pairs; a woman in a red jacket pauses near the centre, checks her phone, then continues to the left. The light is flat and grey, suggesting an overcast afternoon.",
    "A tree's bare branches sway gently against a pale sky.\nThe camera is static; only the twigs move, and the wind picks up towards the end of the clip.",
    "An animated rabbit — large, white and round — steps out of a burrow, stretches, and yawns. Birds flutter around him; the meadow is bright green, the style is a polished 3D render (Blender), and the mood is cheerful.",
    "A cyclist in a yellow jersey rides along a tree-lined road, followed by two others; the camera pans right to keep them in frame. Sunlight flickers through the leaves, casting moving shadows on the asphalt.",
    "Close-up of a man talking on a mobile phone inside a car. He says something, smiles, and glances out of the side window, where trees pass by. Low resolution, slightly blurry, typical of 1990s test footage.",
    'A city street at night: cars pass, their headlights streaking; a sign reads "OPEN 24h". The camera slowly zooms in on a café whose windows glow warm orange.',
    "Blue-skinned animated character with an oversized head (Megamind) gestures dramatically while speaking; the background is a dark, high-tech lair with glowing screens. Quick cuts, expressive faces, cinematic lighting.",
    "Un paysage urbain filmé depuis un toit : des immeubles, des grues, un ciel nuageux. La caméra panoramique lentement vers la gauche. (French caption from a multilingual model.)",
    "街の交差点を人々が行き交う様子。カメラは固定されている。曇り空の下、傘を持った人もいる。",
    "A busy sidewalk, people walk... someone drops a bag; another person picks it up & hands it back :) The footage is grainy, 4:3, shot on a CCTV-style camera, timestamp overlay in the corner — 12/03, 14:05.",
    "Slow tilt up from a cobblestone road to the top of an old church tower; pigeons take off; the sky is a saturated blue. 🌤️ Peaceful atmosphere; no people visible.",
    "Two people walk, side by side, toward the camera; one wears a backpack, the other pushes a stroller. Behind them a tram passes from right to left. Natural daylight; shallow depth of field; the camera holds still.",
    "An aerial view of a river winding through autumn forest, colours ranging from deep red to gold; the drone moves forward and slightly down, revealing a small bridge. Time of day: late afternoon, golden hour.",
    "Text on screen: 'Chapter 2'. Fade to black. Then a kitchen, where a chef chops onions on a wooden board, rapid knife movements, steam rising from a pot in the background.",
]


def pick(key: str) -> str:
    return CAPS[int(hashlib.sha1(key.encode()).hexdigest(), 16) % len(CAPS)]


class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "gpt-4o", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        req = json.loads(self.rfile.read(n))
        parts = req["messages"][-1]["content"]
        key = json.dumps(parts)[-4000:] if not isinstance(parts, str) else parts
        cap = pick(key)
        rf = req.get("response_format") or {}
        if rf.get("type") == "json_schema":
            props = rf["json_schema"]["schema"].get("properties", {})
            words = cap.split()
            obj = {}
            for i, (k, spec) in enumerate(props.items()):
                if spec.get("type") == "string":
                    text = cap if k == "caption" else " ".join(words[i : i + 12]) or cap[:40]
                    obj[k] = text[: spec.get("maxLength", 10_000)]
                elif spec.get("type") == "array":
                    obj[k] = words[:3]
                elif spec.get("type") in ("number", "integer"):
                    obj[k] = 1
                elif spec.get("type") == "boolean":
                    obj[k] = True
                elif "enum" in spec:
                    obj[k] = spec["enum"][0]
            content = json.dumps(obj, ensure_ascii=False, indent=2)
        else:
            content = cap
        out = {
            "id": "x",
            "object": "chat.completion",
            "model": req.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": 900,
                "completion_tokens": len(content) // 4,
                "total_tokens": 900 + len(content) // 4,
            },
        }
        body = json.dumps(out, ensure_ascii=False).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
