"""A fictional cross-lingual event (written for newswatch's tests): one Chinese report and two
English ones of the same drill, plus unrelated items in both languages."""

from __future__ import annotations

DRILL_ZH = {
    "id": "zh-drill", "language": "zh-Hant", "source": "Fictional Daily (Chinese)",
    "published_at": "2026-03-10T01:00:00Z",
    "title": "國防部：共軍「海龍－7」演習 偵獲共機31架次逼近臺灣",
    "text": "國防部今天表示，中共解放軍在臺灣周邊展開代號「海龍－7」的聯合演習，國軍偵獲共機31架次"
            "與艦艇9艘，其中多架逾越海峽中線，國防部已派遣海空兵力嚴密監控並譴責中共挑釁。",
}
DRILL_EN = [
    {"id": "en-drill-1", "language": "en", "source": "Fictional Wire",
     "published_at": "2026-03-10T03:00:00Z",
     "title": "Taiwan tracks 31 Chinese aircraft as PLA launches 'Sea Dragon-7' drill",
     "text": "Taiwan's defence ministry said on Tuesday that 31 Chinese military aircraft and "
             "nine warships were operating around the island as the People's Liberation Army "
             "began an exercise it called Sea Dragon-7. Several jets crossed the median line "
             "of the Taiwan Strait, and Taiwan sent ships and planes to monitor them."},
    {"id": "en-drill-2", "language": "en", "source": "Fictional Herald",
     "published_at": "2026-03-10T05:00:00Z",
     "title": "China holds 'Sea Dragon-7' military exercise near Taiwan",
     "text": "China's military staged joint drills around Taiwan on Tuesday, sending dozens of "
             "aircraft and warships close to the island. Taiwan's defence ministry condemned "
             "the Sea Dragon-7 exercise as a provocation and said its forces were on alert."},
]
UNRELATED = [
    {"id": "en-bakery", "language": "en", "source": "Fictional Herald",
     "published_at": "2026-03-10T04:00:00Z",
     "title": "Village bakery wins national bread prize",
     "text": "A small bakery in the hills won the national sourdough prize on Tuesday, beating "
             "two hundred entries with a rye loaf baked in a wood-fired oven."},
    {"id": "zh-market", "language": "zh-Hant", "source": "Fictional Daily (Chinese)",
     "published_at": "2026-03-10T02:00:00Z",
     "title": "夜市新攤位開張 排隊人潮不斷",
     "text": "市區夜市今晚有三家新攤位開張，販售蔥油餅與豆花，吸引大批民眾排隊品嚐。"},
]
