#!/bin/bash
# New heads for demo/model on one H200 (issue 16; README "Demo model"): prep once (corpus, 75 s of
# self-distillation, validation prompts from held-out files the 340 evaluation prompts do not use),
# two recipes side by side on the GPU (index decay 0.8 and 1.0, continuing the shipped heads), GPU
# fp32 evaluation of both and of the heads before. Run from the repository root with $OUT set:
#     LIMIT_S=525 OUT=/tmp/out bash demo/heads_run.sh 250 75
# $OUT gets a/ and b/ (each variant's safetensors) and meta.tar (configs, tokenizer, logs, reports);
# $OUT/chosen.txt names the variant with the higher validation acceptance. The 2026-12-01
# run used SNAP=.snap/ov, a copy of this tree at commit 5c8179d plus this package, so that engine
# edits in progress could not change it.
set -u
PY=${PY:-python3}; R=$(pwd); HS=${1:-230}; DS=${2:-75}; DEV=${DEV:-cuda}; EXTRA=${EXTRA:-}; EVX=${EVX:-}
cd "$R/${SNAP:-.}" || exit 1
export PYTHONUNBUFFERED=1
W=/tmp/h16; rm -rf $W; mkdir -p $W
T0=$(date +%s); t() { echo "[run] $(( $(date +%s) - T0 ))s $*"; }
B="$PY -m jobs.build_demo --heads-only $R/demo/model --prompts $R/demo/prompts.parquet --prep $W/prep.pt --val-prompts $W/val.parquet --device $DEV"
t prep
$B --stage prep --distill-rows 65536 --distill-batch 2048 --distill-s $DS $EXTRA > $W/prep.log 2>&1 || { tail -40 $W/prep.log; exit 1; }
tail -3 $W/prep.log
C="--stage train --heads-s $HS --block-sizes 4,8,16,32,8,16 --block-size 8 --heads-batch-size 64 --heads-lr 1e-3 --init checkpoint $EXTRA"
t train
$B $C --out $W/a --index-decay 0.8 > $W/a.log 2>&1 &
$B $C --out $W/b --index-decay 1.0 > $W/b.log 2>&1 &
wait
tail -n 3 $W/a.log $W/b.log
for v in a b; do mkdir -p $OUT/$v; cp $W/$v/model/*.safetensors $OUT/$v/ 2>/dev/null; done
REM=$(( ${LIMIT_S:-530} - ($(date +%s) - T0) - 20 )); t "eval limit ${REM}s"
t eval
E="timeout $REM $PY -m jobs.eval_demo --device $DEV --dtype float32 --batch-size 340"
for v in a b; do
  $E --model $W/$v/model --prompts $W/val.parquet --block-sizes 8,16 --out $W/$v/val.json $EVX > $W/$v.val.log 2>&1 &
  $E --model $W/$v/model --prompts $R/demo/prompts.parquet --out $W/$v/eval.json $EVX > $W/$v.eval.log 2>&1 &
done
$E --model $R/demo/model --prompts $R/demo/prompts.parquet --out $W/old_eval.json $EVX > $W/old.log 2>&1 &
wait
t pack
cd $W && tar -cf $OUT/meta.tar --exclude='*.safetensors' --exclude=prep.pt . && cd - > /dev/null
for f in $W/a/val.json $W/b/val.json $W/a/eval.json $W/b/eval.json $W/old_eval.json; do
  $PY -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[1], {k: (e['all']['mean_acceptance_length'], e['exact_match_with_ar']) for k, e in r['by_block_size'].items()}, 'loop', r['loop_rate'], 'empty', r['empty_rate'])" $f 2>&1 | tail -1
done
$PY -c "import json,sys; s={v: max(e['all']['mean_acceptance_length'] for e in json.load(open(f'$W/{v}/val.json'))['by_block_size'].values()) for v in 'ab'}; print(max(s, key=s.get))" > $OUT/chosen.txt 2>/dev/null
t "done: chosen on validation: $(cat $OUT/chosen.txt)"
