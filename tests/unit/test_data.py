import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.opt_ml import RETAIL_SAMPLE
from recsys.data.ids import IdIndex, normalize_id
from recsys.data.interactions import Interactions
from recsys.data.presets import load_channel
from recsys.platform.errors import UserError
from recsys.platform.paths import SageMakerPaths
from recsys.training.hyperparameters import parse
from recsys.training.roles import build, leave_one_out, load_training_data

RETAIL = RETAIL_SAMPLE


def channel(tmp_path: Path, files: dict[str, bytes | str], name: str = "train") -> Path:
    d = tmp_path / "input/data" / name
    d.mkdir(parents=True, exist_ok=True)
    for fname, content in files.items():
        (d / fname).write_bytes(content.encode() if isinstance(content, str) else content)
    return d


def test_normalize_id_unifies_spellings():
    assert (
        normalize_id(196)
        == normalize_id("196")
        == normalize_id(196.0)
        == normalize_id("13607.0".replace("13607", "196"))
        == "196"
    )
    assert normalize_id(" A12 ") == "A12" and normalize_id("0012") == "0012" and normalize_id(1.5) == "1.5"
    index = IdIndex(["196", "x"])
    assert index.get(196) == 0 and index.get("196.0") == 0 and index.get("nope") == -1
    assert index.lookup([196, "x", 3]).tolist() == [0, 1, -1]


def test_online_retail_cleaning_counts_every_dropped_row(tmp_path):
    csv = (
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "1,A,a,2,12/1/2010 8:26,1.0,13607.0,UK\n"
        "2,A,a,3,12/2/2010 8:26,1.0,13607.0,UK\n"  # same customer+item: summed → 5
        "3,B,b,1,12/3/2010 8:26,1.0,,UK\n"  # no customer
        "C4,B,b,-1,12/3/2010 9:26,1.0,13607.0,UK\n"  # cancellation
        "5,B,b,0,12/3/2010 9:26,1.0,17850,UK\n"  # non-positive quantity
        "6,B,b,abc,12/3/2010 9:26,1.0,17850,UK\n"  # non-numeric quantity
        "7,C,c,4,not a date,1.0,17850,UK\n"  # bad date
        "8,C,c,4,12/5/2010 9:26,1.0,17850,UK\n"
    )
    d = channel(tmp_path, {"retail.csv": csv})
    clean = load_channel(d, "train", parse({"preset": "online_retail"}))
    frame = clean.frame.sort_values(["user", "item"]).reset_index(drop=True)
    assert frame[["user", "item"]].values.tolist() == [["13607", "A"], ["17850", "C"]]
    assert frame.weight.tolist() == [5.0, 4.0]
    assert clean.dropped == {
        "no customer id": 1,
        "cancelled invoice": 1,
        "non-positive quantity": 1,
        "missing or non-numeric rating/weight": 1,
        "missing or unparseable timestamp": 1,
    }
    assert clean.merged_duplicates == 1 and clean.rows_read == 8
    assert clean.report()["rows_dropped"]["no customer id"] == 1


def test_movielens_u_data_and_ratings_dat_and_folder(tmp_path):
    d = channel(
        tmp_path,
        {
            "u.data": "196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
            "u.item": "1|Toy Story|...\n",
            "README": "readme text\n",
        },
    )
    clean = load_channel(d, "train", parse({"preset": "movielens"}))  # u.item / README ignored
    assert clean.frame.user.tolist() == ["196", "186"] and clean.has_timestamps
    d2 = channel(tmp_path / "b", {"ratings.dat": "1::1193::5::978300760\n1::661::3::978302109\n"})
    clean2 = load_channel(d2, "train", parse({"preset": "movielens"}))
    assert clean2.frame.item.tolist() == ["1193", "661"] and clean2.frame.weight.tolist() == [5.0, 3.0]
    d3 = channel(tmp_path / "c", {"ratings.csv": "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n"})
    assert load_channel(d3, "train", parse({"preset": "movielens"})).frame.item.tolist() == ["31"]


def test_formats_csv_tsv_parquet_gzip_and_many_files(tmp_path):
    frame = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "item_id": ["i1", "i2", "i1"], "clicks": [1, 2, 3]})
    d = tmp_path / "input/data/train"
    d.mkdir(parents=True)
    frame.iloc[:1].to_csv(d / "part-0.csv", index=False)
    frame.iloc[1:2].to_parquet(d / "part-1.parquet")
    (d / "part-2.csv.gz").write_bytes(gzip.compress(frame.iloc[2:].to_csv(index=False).encode()))
    (d / "_SUCCESS").write_text("")
    clean = load_channel(d, "train", parse({}))  # well-known names recognised
    assert sorted(clean.frame.user) == ["u1", "u2", "u3"] and sorted(clean.frame.weight) == [1.0, 2.0, 3.0]
    tsv = channel(tmp_path / "t", {"x.tsv": "a\tb\n1\t2\n3\t4\n"})
    clean = load_channel(tsv, "train", parse({"user_col": "a", "item_col": "b"}))
    assert clean.frame.user.tolist() == ["1", "3"] and clean.frame.weight.tolist() == [1.0, 1.0]


def test_headerless_file_with_column_indices(tmp_path):
    d = channel(tmp_path, {"x.csv": "5,u9,i3,17\n6,u9,i4,18\n"})
    clean = load_channel(d, "train", parse({"user_col": "1", "item_col": "2", "timestamp_col": "3"}))
    assert clean.frame.user.tolist() == ["u9", "u9"] and clean.frame.timestamp.tolist() == [17.0, 18.0]


def test_malformed_lines_are_counted_not_fatal(tmp_path):
    d = channel(tmp_path, {"x.csv": "user,item\na,b\nc,d,e,f\n,x\ng,h\n"})
    clean = load_channel(d, "train", parse({}))
    assert clean.frame.user.tolist() == ["a", "g"]
    assert clean.dropped["malformed line (wrong number of fields)"] == 1
    assert clean.dropped["missing user id"] == 1


@pytest.mark.parametrize(
    "files, hp, fragment",
    [
        ({"x.csv": ""}, {}, "is empty"),
        ({"x.csv": "user,item\n"}, {}, "every file is empty"),
        ({"x.bin": bytes(range(256)) * 10}, {}, "not a CSV/TSV or Parquet file"),
        ({"x.parquet": b"PAR1garbage"}, {}, "not a readable Parquet file"),
        ({"x.csv": "a,b\n1,2\n"}, {}, "no user column found"),
        ({"x.csv": "user,item\n1,2\n"}, {"rating_col": "stars"}, "column 'stars' (`rating_col`) not found"),
        ({"x.csv": "user,item\n1,2\n"}, {"user_col": "0", "item_col": "5"}, "column index 5"),
        ({"x.csv": "InvoiceNo,StockCode\n1,2\n"}, {"preset": "online_retail"}, "CustomerID"),
    ],
)
def test_bad_files_fail_with_a_reason_naming_the_file(tmp_path, files, hp, fragment):
    d = channel(tmp_path, files)
    with pytest.raises(UserError) as err:
        load_channel(d, "train", parse(hp))
    assert fragment in str(err.value)
    if "column" not in fragment and "empty" not in fragment:
        assert "x." in str(err.value)


def test_missing_train_channel_and_empty_channel(tmp_path):
    (tmp_path / "input/data/validation").mkdir(parents=True)
    with pytest.raises(UserError, match="no `train` channel.*validation"):
        load_training_data(SageMakerPaths(tmp_path), parse({}))
    (tmp_path / "input/data/train").mkdir()
    with pytest.raises(UserError, match="channel `train` has no data files"):
        load_training_data(SageMakerPaths(tmp_path), parse({}))


def test_leave_one_out_holds_out_latest_per_user():
    users = np.array([0, 0, 0, 1, 1, 2])
    items = np.array([0, 1, 2, 0, 3, 1])
    ts = np.array([10, 30, 20, 5, 1, 7], dtype=float)
    data = Interactions(users, items, np.ones(6), ts, 3, 4)
    train, test = leave_one_out(data, seed=0)
    assert sorted(zip(test.users.tolist(), test.items.tolist())) == [(0, 1), (1, 0)]  # user 2 has one row: kept
    assert len(train) == 4 and 2 in train.users


def test_leave_one_out_without_timestamps_is_seeded():
    rng = np.random.default_rng(0)
    data = Interactions(rng.integers(0, 50, 1000), rng.integers(0, 80, 1000), np.ones(1000), None, 50, 80)
    a = leave_one_out(data, 1)[1]
    b = leave_one_out(data, 1)[1]
    assert np.array_equal(a.items, b.items) and len(np.unique(a.users)) == len(a.users)


def test_test_channel_with_unknown_users_and_items_is_reported_and_skipped(tmp_path):
    shutil.copy(RETAIL, channel(tmp_path, {}) / "r.csv")
    t = channel(
        tmp_path,
        {
            "t.csv": "InvoiceNo,StockCode,Quantity,InvoiceDate,CustomerID\n"
            "9,85123A,1,2011-12-01 10:00:00,nobody\n"
            "9,NOSUCHITEM,1,2011-12-01 10:00:00,13767.0\n"
            "9,22867,1,2011-12-01 10:00:00,13767\n"
        },
        "test",
    )
    assert t.exists()
    data = load_training_data(SageMakerPaths(tmp_path), parse({"preset": "online_retail"}))
    assert len(data.test) == 1
    assert data.report["test"]["rows_skipped"] == {"unknown user": 1, "unknown item": 1}
    # The test channel only reports: validation is still carved from train, one interaction per user.
    assert data.validation_carved and data.report["validation_source"].startswith("carved from train")
    assert len(data.train) + len(data.validation) == len(data.all)


def test_validation_and_test_channels_each_keep_their_role(tmp_path):
    shutil.copy(RETAIL, channel(tmp_path, {}) / "r.csv")
    header = "InvoiceNo,StockCode,Quantity,InvoiceDate,CustomerID\n"
    channel(tmp_path, {"v.csv": header + "9,22867,1,2011-12-01 10:00:00,13767\n"}, "validation")
    channel(tmp_path, {"t.csv": header + "9,85123A,1,2011-12-02 10:00:00,13767\n"}, "test")
    data = load_training_data(SageMakerPaths(tmp_path), parse({"preset": "online_retail"}))
    assert not data.validation_carved and data.report["validation_source"] == "validation channel"
    assert len(data.validation) == 1 and len(data.test) == 1
    assert len(data.train) == len(data.all)  # nothing carved: selection trains on all of train
    item = lambda x: data.items.ids[x.items[0]]  # noqa: E731
    assert (item(data.validation), item(data.test)) == ("22867", "85123A")


def test_validation_channel_with_no_known_rows_falls_back_to_carving(tmp_path):
    shutil.copy(RETAIL, channel(tmp_path, {}) / "r.csv")
    channel(
        tmp_path,
        {"t.csv": "InvoiceNo,StockCode,Quantity,InvoiceDate,CustomerID\n1,X,1,2011-01-01,nobody\n"},
        "validation",
    )
    data = load_training_data(SageMakerPaths(tmp_path), parse({"preset": "online_retail"}))
    assert data.validation_carved and data.report["validation_source"].startswith("carved")
    assert "note" in data.report["validation"]


def test_same_data_as_train_and_test_is_counted_as_overlap(tmp_path):
    shutil.copy(RETAIL, channel(tmp_path, {}) / "r.csv")
    shutil.copy(RETAIL, channel(tmp_path, {}, "test") / "r.csv")
    data = load_training_data(SageMakerPaths(tmp_path), parse({"preset": "online_retail"}))
    assert data.report["overlap_with_train"] == {"validation": 0, "test": len(data.test)}
    assert len(data.test) == len(data.all)


def test_leave_one_out_holds_out_every_row_of_the_latest_pair():
    # User 0 bought item 1 twice, the second time last: both rows leave training, or item 1 would be "seen".
    users = np.array([0, 0, 0, 0, 1, 1])
    items = np.array([1, 0, 2, 1, 0, 3])
    ts = np.array([1, 10, 20, 30, 5, 1], dtype=float)
    train, held = leave_one_out(Interactions(users, items, np.ones(6), ts, 2, 4), seed=0)
    assert sorted(zip(held.users.tolist(), held.items.tolist())) == [(0, 1), (1, 0)]
    assert (0, 1) not in set(zip(train.users.tolist(), train.items.tolist())) and len(train) == 3
    # A user with one distinct item (bought twice) keeps it: nothing would be left to train on.
    train, held = leave_one_out(Interactions(np.array([0, 0]), np.array([2, 2]), np.ones(2), None, 1, 3), seed=0)
    assert len(held) == 0 and len(train) == 2


def test_fixture_channel_loads(opt_ml):
    data = load_training_data(SageMakerPaths(opt_ml), parse({"preset": "online_retail"}))
    assert data.report["train"]["rows_dropped"]["no customer id"] == 40
    assert len(data.users) == 300 and len(data.validation) > 250 and data.test is None
    assert np.all(data.all.csr()[0][-1] == len(np.unique(data.all.pair_keys())))


def test_build_requires_something_to_evaluate():
    frame = pd.DataFrame({"user": ["a", "b"], "item": ["x", "y"], "weight": [1.0, 1.0]})
    from recsys.data.presets import CleanFrame

    with pytest.raises(UserError, match="nothing to validate on"):
        build(CleanFrame(frame, False, 2), None, None, parse({}))
