"""Regenerate tests/testdata/ocr/sroie_tiny: synthetic receipts in the SROIE folder layout."""

import pathlib

from PIL import Image, ImageDraw, ImageFont

ROOT = pathlib.Path(__file__).parent / "sroie_tiny"
RECEIPTS = {
    "t001": ["FRESH MART, SDN BHD", "NO. 12 JALAN MAWAR", "MILK 1L        5.90", "BREAD          3.20", "TOTAL RM       9.10", "THANK YOU"],
    "t002": ["CORNER GROCER", "EGGS 10PCS     6.50", "RICE 5KG      19.90", "TOTAL         26.40"],
    "t003": ["DAILY NEEDS", "SUGAR 1KG      2.85", "SALT           0.90", "TOTAL          3.75", "CASH           5.00"],
}


def main() -> None:
    for sub in ("img", "box", "text"):
        (ROOT / sub).mkdir(parents=True, exist_ok=True)
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf", 18)
    for rid, lines in RECEIPTS.items():
        img = Image.new("L", (300, 40 + 34 * len(lines)), 255)
        d = ImageDraw.Draw(img)
        boxes = []
        for i, t in enumerate(lines):
            x, y = 15, 20 + 34 * i
            d.text((x, y), t, font=font, fill=0)
            l, tp, r, b = d.textbbox((x, y), t, font=font)
            boxes.append(f"{l},{tp},{r},{tp},{r},{b},{l},{b},{' '.join(t.split())}")
        img.save(ROOT / "img" / f"{rid}.jpg", quality=90)
        (ROOT / "box" / f"{rid}.csv").write_text("\n".join(boxes) + "\n")
        (ROOT / "text" / f"{rid}.txt").write_text("\n".join(" ".join(t.split()) for t in lines) + "\n")


if __name__ == "__main__":
    main()
