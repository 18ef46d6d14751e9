"""Component choices (offline.pick) on cached maps: python pick_eval.py maps.pt."""
import sys, torch, itertools; sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
torch.set_num_threads(1)
from offline import evaluate_pick
data = torch.load(sys.argv[1])
for crit, mom, sig in [("peak",0,0.5),("overlap",0,0.5),("overlap",1.0,0.5),("mass_gauss",0,0.5),("mass_gauss",0,1.0),("mass_gauss",1.0,1.0),("peak_gauss",0,1.0),("peak_gauss",1.0,1.0),("mass",0,1)]:
    ao, per = evaluate_pick(data, crit=crit, momentum=mom, sigma=sig, threshold=0.3)
    print(crit, mom, sig, round(ao,3), {n[-3:]: round(v,2) for n,v in per.items()}, flush=True)
