(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('units-data').textContent);
  var grid = document.getElementById('grid');
  var sortBox = document.getElementById('sort');
  var classBox = document.getElementById('class');
  var findBox = document.getElementById('find');
  var said = document.getElementById('said');
  var perClass = {};
  var state = {sort: 'mean', cls: '', find: ''};
  var observer = new IntersectionObserver(function (seen) {
    seen.forEach(function (e) {
      if (!e.isIntersecting) { return; }
      e.target.setAttribute('src', e.target.getAttribute('data-src'));
      observer.unobserve(e.target);
    });
  }, {rootMargin: '300px'});

  function count() {
    var asked = grid.querySelectorAll('img[src]');
    var ok = 0;
    asked.forEach(function (i) { if (i.complete && i.naturalWidth > 0) { ok += 1; } });
    document.body.setAttribute('data-loaded', ok + '/' + asked.length);
    document.body.setAttribute('data-cards', String(grid.children.length));
    document.getElementById('loaded').textContent = ok + ' of ' + asked.length + ' requested images loaded; ' +
      grid.children.length + ' of ' + data.units.length + ' units shown (images load as they scroll into view)';
  }

  function fmt(v) { return v === null ? 'n/a' : Number(v).toPrecision(4); }
  function pad(n, width) { var s = String(n); while (s.length < width) { s = '0' + s; } return s; }
  function thumb(index) { return index < 0 ? '' : data.thumbs + '/t' + pad(index, 7) + '.jpg'; }

  function rows() {
    var cls = state.cls === '' ? null : perClass[state.cls];
    var out = [];
    data.units.forEach(function (u, i) {
      var r = {u: u, top: u.top, img: u.img};
      if (cls) {
        var e = cls[i];
        if (!e || e[0] === null) { return; }
        r.top = e[0];
        r.img = thumb(e[1]);
      }
      out.push(r);
    });
    var key = state.sort;
    function value(r) { return key === 'top' ? r.top : r.u[key]; }
    out.sort(function (a, b) {
      if (key === 'channel') { return a.u.c - b.u.c; }
      var x = value(a), y = value(b);
      if (x === null || y === null) { return (x === null) - (y === null) || a.u.c - b.u.c; }
      return y - x || a.u.c - b.u.c;
    });
    return out;
  }

  function picture(file, alt) {
    var img = document.createElement('img');
    img.setAttribute('data-src', file);
    img.setAttribute('alt', alt);
    img.addEventListener('load', count);
    img.addEventListener('error', count);
    return img;
  }

  function card(r) {
    var u = r.u;
    var div = document.createElement('div');
    div.className = 'unit' + (u.page ? ' rendered' : '');
    div.setAttribute('data-channel', String(u.c));
    var name = document.createElement(u.page ? 'a' : 'span');
    if (u.page) { name.setAttribute('href', u.page); }
    name.textContent = 'channel ' + u.c;
    div.appendChild(name);
    div.appendChild(document.createElement('br'));
    if (r.img) { div.appendChild(picture(r.img, (state.cls === '' ? 'top image' : 'top image in class'))); }
    if (u.dimg) { div.appendChild(picture(u.dimg, 'what it wants')); }
    var small = document.createElement('small');
    small.textContent = 'mean ' + fmt(u.mean) + ' \u00b7 rate ' + (100 * u.rate).toFixed(1) + '% \u00b7 top ' +
      (state.cls === '' ? '' : 'in class ') + fmt(r.top) + (u.dream === null ? '' : ' \u00b7 dream ' + fmt(u.dream)) + (u.dead ? ' \u00b7 dead' : '');
    div.appendChild(document.createElement('br'));
    div.appendChild(small);
    return div;
  }

  function find() {
    said.textContent = '';
    grid.querySelectorAll('.found').forEach(function (e) { e.classList.remove('found'); });
    if (state.find === '') { return; }
    var ch = Number(state.find);
    var el = grid.querySelector('[data-channel="' + ch + '"]');
    if (el) {
      el.classList.add('found');
      el.scrollIntoView({block: 'center'});
      return;
    }
    var exists = Number.isInteger(ch) && ch >= 0 && ch < data.units.length;
    said.textContent = exists ? 'channel ' + ch + ' has no top image in this class' :
      'no channel ' + state.find + ' here: channels are 0 to ' + (data.units.length - 1);
  }

  function remember() {
    var parts = ['sort=' + state.sort];
    if (state.cls !== '') { parts.push('class=' + encodeURIComponent(data.classes[state.cls])); }
    if (state.find !== '') { parts.push('find=' + state.find); }
    history.replaceState(null, '', '#' + parts.join('&'));
  }

  function render() {
    observer.disconnect();
    grid.textContent = '';
    rows().forEach(function (r) { grid.appendChild(card(r)); });
    find();
    /* Images already near the view load now; the observer's first callback waits for a rendered frame, which a
       busy or headless browser may not produce before it is asked what loaded. */
    var reach = window.innerHeight + 300;
    grid.querySelectorAll('img[data-src]').forEach(function (i) {
      var box = i.getBoundingClientRect();
      if (box.bottom > -300 && box.top < reach) { i.setAttribute('src', i.getAttribute('data-src')); }
      else { observer.observe(i); }
    });
    count();
    remember();
  }

  function withClass(then) {
    if (state.cls === '' || perClass[state.cls]) { then(); return; }
    window.vizkitClass = function (index, entries) { perClass[index] = entries; };
    var s = document.createElement('script');
    s.setAttribute('src', data.classDir + '/c' + pad(state.cls, 4) + '.js');
    s.addEventListener('load', then);
    document.head.appendChild(s);
  }

  function fromHash() {
    location.hash.replace(/^#/, '').split('&').forEach(function (part) {
      var kv = part.split('=');
      var v = decodeURIComponent(kv[1] || '');
      if (kv[0] === 'sort' && sortBox.querySelector('option[value="' + v + '"]')) { state.sort = v; }
      if (kv[0] === 'find') { state.find = v; }
      if (kv[0] === 'class' && data.classes.length) {
        var k = data.classes.indexOf(v);
        if (k < 0 && /^[0-9]+$/.test(v) && Number(v) < data.classes.length) { k = Number(v); }
        if (k >= 0) { state.cls = String(k); }
      }
    });
    sortBox.value = state.sort;
    classBox.value = state.cls;
    findBox.value = state.find;
  }

  sortBox.addEventListener('change', function () { state.sort = sortBox.value; render(); });
  classBox.addEventListener('change', function () { state.cls = classBox.value; withClass(render); });
  findBox.addEventListener('input', function () { state.find = findBox.value.trim(); find(); remember(); });
  fromHash();
  withClass(render);
}());
