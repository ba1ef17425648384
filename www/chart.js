// The live loss chart (uPlot): loss per optimizer step.

import uPlot from './vendor/uPlot.esm.js';

export class LossChart {
  constructor(element) {
    this.element = element;
    this.steps = [];
    this.losses = [];
    this.plot = new uPlot({
      width: Math.max(320, element.clientWidth || 640),
      height: 240,
      scales: { x: { time: false } },
      axes: [{ label: 'step' }, { label: 'loss' }],
      series: [{ label: 'step' }, { label: 'loss', stroke: '#2563eb', width: 2, points: { show: true, size: 4 } }],
    }, [this.steps, this.losses], element);
    new ResizeObserver(() => this.plot.setSize({ width: Math.max(320, element.clientWidth), height: 240 })).observe(element);
  }

  clear() {
    this.steps.length = 0;
    this.losses.length = 0;
    this.plot.setData([this.steps, this.losses]);
    this.element.dataset.points = '0';
    this.element.dataset.losses = '';
  }

  add(step, loss) {
    this.steps.push(step);
    this.losses.push(loss);
    this.plot.setData([this.steps, this.losses]);
    // Readable by scripts that drive the page (and by the tests).
    this.element.dataset.points = String(this.steps.length);
    this.element.dataset.losses = this.losses.join(',');
  }
}
