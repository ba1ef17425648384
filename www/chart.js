// The live loss chart (uPlot): the training loss per optimizer step, and
// the validation loss (held-out examples) as a second series where it was
// measured (step 0: before training).

import uPlot from './vendor/uPlot.esm.js';

export class LossChart {
  constructor(element) {
    this.element = element;
    this.steps = [];
    this.losses = []; // training loss at each step (null at step 0)
    this.validation = []; // validation loss where measured, else null
    this.plot = new uPlot({
      width: Math.max(320, element.clientWidth || 640),
      height: 240,
      scales: { x: { time: false } },
      axes: [{ label: 'step' }, { label: 'loss' }],
      series: [
        { label: 'step' },
        { label: 'training loss', stroke: '#2563eb', width: 2, points: { show: true, size: 4 } },
        { label: 'validation loss', stroke: '#dc2626', width: 2, dash: [6, 4], spanGaps: true, points: { show: true, size: 6 } },
      ],
    }, this.data(), element);
    new ResizeObserver(() => this.plot.setSize({ width: Math.max(320, element.clientWidth), height: 240 })).observe(element);
  }

  data() {
    return [this.steps, this.losses, this.validation];
  }

  clear() {
    this.steps.length = 0;
    this.losses.length = 0;
    this.validation.length = 0;
    this.redraw();
  }

  // The index of `step`, made (in order) when new.
  at(step) {
    let i = this.steps.indexOf(step);
    if (i >= 0) return i;
    i = this.steps.findIndex((s) => s > step);
    if (i < 0) i = this.steps.length;
    this.steps.splice(i, 0, step);
    this.losses.splice(i, 0, null);
    this.validation.splice(i, 0, null);
    return i;
  }

  add(step, loss) {
    this.losses[this.at(step)] = loss;
    this.redraw();
  }

  addValidation(step, loss) {
    this.validation[this.at(step)] = loss;
    this.redraw();
  }

  redraw() {
    this.plot.setData(this.data());
    // Readable by scripts that drive the page (and by the tests).
    const losses = this.losses.filter((x) => x !== null);
    this.element.dataset.points = String(losses.length);
    this.element.dataset.losses = losses.join(',');
    this.element.dataset.validation = this.steps.map((s, i) => (this.validation[i] === null ? null : `${s}:${this.validation[i]}`))
      .filter(Boolean).join(',');
  }
}
