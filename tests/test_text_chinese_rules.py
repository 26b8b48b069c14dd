"""Rule-by-rule checks of the Mandarin normaliser against the reference's output.

Each family of rules of the GPT-SoVITS `zh_normalization` text normaliser (plus
the punctuation map of `chinese2.text_normalize`) gets its own table.  The
expected strings are what the reference produces for these sentences, quirks
included (e.g. "25摄氏度" -> 二十五度, "1-2天" -> 一减两天, "5mm" -> 五米米):
the BERT features and the phones are aligned to that text, so a "nicer" reading
would be a compatibility bug, not a fix.
"""

from __future__ import annotations

import pytest

from engines.text.chinese import normalize_chinese

Case = tuple[str, str]


def _check(text: str, expected: str) -> None:
    """Both versions share one normaliser; check each so neither can drift."""
    for version in ("v1", "v2"):
        assert normalize_chinese(text, version) == expected, (text, version)


DATES: list[Case] = [
    ("她生于1998年7月4日。", "她生于一九九八年七月四日."),
    ("98年3月开业", "九八年三月开业"),
    ("2025年12月31号放假", "二零二五年十二月三十一号放假"),
    ("2024-03-15见", "二零二四年三月十五日见"),
    ("2024/03/15见", "二零二四年三月十五日见"),
    ("2024.03.15见", "二零二四年三月十五日见"),
]

DATE_RANGES: list[Case] = [
    # The dash between two dates is left for the late symbol map: it says 减.
    ("2023年1月5日-2023年2月1日", "二零二三年一月五日减二零二三年二月一日"),
    # A tilde is not a unit range here, so the punctuation map makes it a pause.
    ("2024年5月1日~5月3日", "二零二四年五月一日…五月三日"),
]

TIMES: list[Case] = [
    ("下午3:05开会", "下午三点零五分开会"),
    ("7:30出发", "七点半出发"),
    ("12:00:09整", "十二点零九秒整"),
]

TIME_RANGES: list[Case] = [
    # 半 for the end time is decided from the start minute, both ways round.
    ("8:30-9:15上课", "八点半至九点半上课"),
    ("10:15-11:30答疑", "十点十五分至十一点三十分答疑"),
    ("9:00~17:45营业", "九点至十七点四十五分营业"),
]

TEMPERATURES: list[Case] = [
    ("今天-3°C", "今天零下三度"),
    ("零下5℃", "零下五度"),
    ("水温25摄氏度", "水温二十五度"),
    ("-2.5摄氏度", "零下二点五度"),
    ("气温-5℃~3℃", "气温零下五度至三度"),
    ("发烧38度", "发烧三十八度"),
]

UNITS: list[Case] = [
    ("跑了5km", "跑了五千米"),
    ("买了3kg", "买了三千克"),
    ("面积20m²", "面积二十平方米"),
    ("喝100ml", "喝一百毫升"),
    ("体积10cm3", "体积十立方厘米"),
    ("用时3s", "用时三秒"),
    ("噪音40db", "噪音四十分贝"),
    # "m" is replaced before "mm" is looked for, and inside English words too.
    ("厚5mm", "厚五米米"),
    ("mass", "米秒秒"),
]

PHONES: list[Case] = [
    ("拨打13812345678", "拨打幺三八幺二三四五六七八"),
    ("+86 13912345678", "八六幺三九幺二三四五六七八"),
    ("电话010-12345678", "电话零幺零减幺二三四五六七八"),
    ("电话0755-8765432", "电话零七五五减八七六五四三二"),
    ("客服400-123-4567", "客服四零零减幺二三减四五六七"),
    ("客服4001234567", "客服四零零幺二三四五六七"),
]

FRACTIONS: list[Case] = [
    ("占3/4", "占四分之三"),
    ("-1/2", "负二分之一"),
]

PERCENTAGES: list[Case] = [
    ("增长50%", "增长百分之五十"),
    ("下降-3.5%", "下降负百分之三点五"),
    ("12.50%", "百分之十二点五零"),
]

RANGES: list[Case] = [
    ("3~5", "三到五"),
    ("-5~-1", "负五到负一"),
    # Unit on one side only: not a unit range, the plain range rule reads it.
    ("3~5kg", "三到五千克"),
    # A dash between numbers is arithmetic first, so it reads 减.
    ("1-2天", "一减两天"),
    ("3-5kg", "三减五千克"),
    ("1.5-2.5", "一点五减二点五"),
]

SIGNS_AND_MATHS: list[Case] = [
    ("气温-7", "气温负七"),
    ("+5", "加五"),
    ("1+1=2", "一加一等于二"),
    ("3×4", "三乘四"),
    ("8÷2", "八除二"),
    ("x²", "的二次方"),
    ("2ⁿ", "二的次方"),
]

DECIMALS: list[Case] = [
    ("圆周率3.14", "圆周率三点一四"),
    (".5", "零点五"),
    ("3.20", "三点二零"),
    ("0.05", "零点零五"),
    ("版本1.2.3", "版本一点二点三"),
    ("No.123", "零点一二三"),
    ("1,234", "一,二三四"),
]

SERIALS_AND_COUNTS: list[Case] = [
    ("第3名", "第三名"),
    ("第12届", "第十二届"),
    ("编号00721", "编号零零七二幺"),
    ("2个", "两个"),
    ("2人", "两人"),
    ("10+年", "十多年"),
    ("3多个", "三多个"),
    ("5余人", "五余人"),
    ("1亿", "一亿"),
    ("12345678901234567个", "一亿二千三百四十五万六千七百八十九亿零一百二十三万四千五百六十七个"),
]

CURRENCY: list[Case] = [
    # Currency signs are not read: ￥ and € are dropped, $ is a full stop.
    ("￥100", "幺零零"),
    ("100元", "一百元"),
    ("$5", ".五"),
    ("€20", "二十"),
]

FULL_WIDTH: list[Case] = [
    ("２０个苹果", "二十个苹果"),
    ("１２３４５", "幺二三四五"),
    ("ＡＢＣ好", "好"),
    ("你好\u3000世界", "你好世界"),
]

PUNCTUATION: list[Case] = [
    ("你好，世界！", "你好,世界!"),
    ("真的吗？？？", "真的吗?"),
    ("等等……", "等等…"),
    ("好...吧", "好…吧"),
    ("嗯，对", "恩,对"),
    ("《红楼梦》", "红楼梦"),
    ("啊——是", "啊是"),
    ("张三·李四", "张三,李四"),
    ("一~二", "一…二"),
    ("a/b", "每"),
]

CHARACTERS: list[Case] = [
    ("說話", "说话"),
    ("α粒子", "阿尔法粒子"),
    ("①号", "一号"),
]


@pytest.mark.parametrize(("text", "expected"), DATES)
def test_dates(text: str, expected: str) -> None:
    _check(text, expected)


@pytest.mark.parametrize(("text", "expected"), DATE_RANGES)
def test_date_ranges(text: str, expected: str) -> None:
    _check(text, expected)


@pytest.mark.parametrize(("text", "expected"), TIMES)
def test_times(text: str, expected: str) -> None:
    _check(text, expected)


@pytest.mark.parametrize(("text", "expected"), TIME_RANGES)
def test_time_ranges(text: str, expected: str) -> None:
    _check(text, expected)


@pytest.mark.parametrize(("text", "expected"), TEMPERATURES)
def test_temperatures(text: str, expected: str) -> None:
    _check(text, expected)


@pytest.mark.parametrize(("text", "expected"), UNITS)
def test_units(text: str, expected: str) -> None:
    _check(text, expected)


@pytest.mark.parametrize(("text", "expected"), PHONES)
def test_phone_numbers(text: str, expected: str) -> None:
    _check(text, expected)


@pytest.mark.parametrize(("text", "expected"), FRACTIONS)
def test_fractions(text: str, expected: str) -> None:
    _check(text, expected)


@pytest.mark.parametrize(("text", "expected"), PERCENTAGES)
def test_percentages(text: str, expected: str) -> None:
    _check(text, expected)


@pytest.mark.parametrize(("text", "expected"), RANGES)
def test_ranges(text: str, expected: str) -> None:
    _check(text, expected)


@pytest.mark.parametrize(("text", "expected"), SIGNS_AND_MATHS)
def test_signs_and_arithmetic(text: str, expected: str) -> None:
    _check(text, expected)


@pytest.mark.parametrize(("text", "expected"), DECIMALS)
def test_decimals(text: str, expected: str) -> None:
    _check(text, expected)


@pytest.mark.parametrize(("text", "expected"), SERIALS_AND_COUNTS)
def test_serial_numbers_and_counts(text: str, expected: str) -> None:
    _check(text, expected)


@pytest.mark.parametrize(("text", "expected"), CURRENCY)
def test_currency(text: str, expected: str) -> None:
    _check(text, expected)


@pytest.mark.parametrize(("text", "expected"), FULL_WIDTH)
def test_full_width(text: str, expected: str) -> None:
    _check(text, expected)


@pytest.mark.parametrize(("text", "expected"), PUNCTUATION)
def test_punctuation(text: str, expected: str) -> None:
    _check(text, expected)


@pytest.mark.parametrize(("text", "expected"), CHARACTERS)
def test_character_conversions(text: str, expected: str) -> None:
    _check(text, expected)
